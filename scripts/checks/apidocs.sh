#!/usr/bin/env bash
# Build the documentation site with fsdocs (the guide pages docs/*.md, notebooks docs/notebooks/*.ipynb when
# there are any, and the API reference from the XML docs of MergeDsl.Core and MergeDsl) into artifacts/apidocs,
# then fail on a broken link (in the site and in the Markdown as GitHub shows it) or on a public member of
# either package without an XML doc. Exit status 0 when all is well; prints each step's time.
#   bash scripts/checks/apidocs.sh
set -euo pipefail
repo=$(cd "$(dirname "$0")/../.." && pwd)
cd "$repo"
step() { printf '\n== %s (%ds so far)\n' "$1" "$SECONDS"; }
export DOTNET_NOLOGO=1 DOTNET_CLI_TELEMETRY_OPTOUT=1
out=artifacts/apidocs

step "dotnet tool restore (fsdocs-tool, .config/dotnet-tools.json)"
dotnet tool restore

step "build (Release; the CLI's folder holds both packages' assemblies with every dependency)"
dotnet build src/MergeDsl.Cli -c Release -nologo -v quiet

step "fsdocs build -> $out"
rm -rf "$out"
mkdir -p artifacts
# --strict: a page or an API doc fsdocs cannot generate fails the build.
# The site is built from a copy of docs/ without the notebooks: fsdocs 22.2.0 rejects dotnet-repl's image-only
# outputs ("unknown output") and cannot type-check the notebooks' first cell (its FSharp.Core resolver); the
# executed notebooks are read on GitHub (docs/notebooks/), which renders their outputs.
input="$repo/artifacts/docs-input/docs"
rm -rf "$repo/artifacts/docs-input" && mkdir -p "$repo/artifacts/docs-input" && cp -r docs "$input"
rm -f "$input"/notebooks/*.ipynb
# Literate scripts in docs/ reference the build by relative paths (../src/...): the copy sees the same tree.
for d in src recipes scripts tests; do ln -s "$repo/$d" "$repo/artifacts/docs-input/$d"; done
dotnet fsdocs build --strict --clean --input "$input" --output "$out" \
  --projects "$repo/src/MergeDsl.Core/MergeDsl.Core.csproj" "$repo/src/MergeDsl/MergeDsl.fsproj" \
  --properties Configuration=Release \
  --parameters root / fsdocs-collection-name MergeDsl fsdocs-logo-src img/logo.png fsdocs-favicon-src img/logo.png \
    fsdocs-license-link '#' fsdocs-release-notes-link '#' fsdocs-repository-link '#' \
    fsdocs-head-extra '<style>.builtin-menu-item{display:none}</style>' \
  > "$repo/artifacts/fsdocs.log" 2>&1 || { tail -40 "$repo/artifacts/fsdocs.log"; echo "FAILED: fsdocs build"; exit 1; }
# (No licence, release notes or public repository yet: the default template's links to them are hidden.)
tail -3 "$repo/artifacts/fsdocs.log"
# fsdocs logs members whose docs it could not read and leaves them out of the reference; that fails the check,
# except for C# delegate types, which fsdocs 22.2.0 cannot read at all ("not a delegate type"): doccheck.fsx
# below still checks their XML docs.
if grep "Could not read comments from entity" "$repo/artifacts/fsdocs.log" | grep -v "InvalidOperationException: not a delegate type"; then
  echo "FAILED: fsdocs could not read the docs of the members above"; exit 1
fi
[ -f "$out/index.html" ] || { echo "FAILED: fsdocs wrote no $out/index.html"; exit 1; }
ls "$out/reference" >/dev/null 2>&1 || { echo "FAILED: fsdocs wrote no API reference ($out/reference)"; exit 1; }

step "GitHub's page links and heading ids on the site"
dotnet fsi scripts/checks/site-links.fsx "$out" src/MergeDsl.Core/bin/Release/net10.0/MergeDsl.Core.xml src/MergeDsl/bin/Release/net10.0/MergeDsl.xml

step "broken links"
dotnet fsi scripts/checks/linkcheck.fsx "$repo" "$out"

step "public members without XML docs"
bin=src/MergeDsl.Cli/bin/Release/net10.0
dotnet fsi scripts/checks/doccheck.fsx "$bin/MergeDsl.Core.dll" "$bin/MergeDsl.dll"

step "done"
