#!/usr/bin/env bash
# Check that MergeDsl ships: `dotnet pack` writes MergeDsl.Core, MergeDsl and the MergeDsl.Cli tool into the
# local feed artifacts/; then, on a clean HOME, DOTNET_CLI_HOME and NuGet folder (a temp dir), the tool installs
# from that feed and runs (--version, methods, a real merge), and an F# script references the MergeDsl package
# from the feed and merges with it, both with TorchSharp's native glue fixed for Debian 12 where needed.
# Packages other than ours come from this machine's NuGet source (its NuGet.Config is carried over).
# Exit status 0 when everything worked; prints each step's time.
#   bash scripts/checks/packages.sh            (KEEP=1 keeps the temp dir)
set -euo pipefail
repo=$(cd "$(dirname "$0")/../.." && pwd)
cd "$repo"
step() { printf '\n== %s (%ds so far)\n' "$1" "$SECONDS"; }
version=$(dotnet msbuild src/MergeDsl -getProperty:Version -nologo)

step "dotnet pack: MergeDsl.Core, MergeDsl, MergeDsl.Cli (tool) -> artifacts/"
rm -f artifacts/MergeDsl.*"$version".nupkg
for p in src/MergeDsl.Core src/MergeDsl src/MergeDsl.Cli; do
  dotnet pack "$p" -c Release -nologo -v quiet
done
ls -l artifacts/*"$version".nupkg
for id in MergeDsl.Core MergeDsl MergeDsl.Cli MergeDsl.Cli.linux-x64; do
  test -f "artifacts/$id.$version.nupkg" || { echo "FAILED: artifacts/$id.$version.nupkg was not written"; exit 1; }
done

tmp=$(mktemp -d "${TMPDIR:-/tmp}/mergedsl-packages.XXXXXX")
[ "${KEEP:-}" = 1 ] || trap 'rm -rf "$tmp"' EXIT
mkdir -p "$tmp/home" "$tmp/work"
if [ -f "$HOME/.nuget/NuGet/NuGet.Config" ]; then
  mkdir -p "$tmp/home/.nuget/NuGet" && cp "$HOME/.nuget/NuGet/NuGet.Config" "$tmp/home/.nuget/NuGet/"
fi
export HOME="$tmp/home" DOTNET_CLI_HOME="$tmp/home" NUGET_PACKAGES="$tmp/nuget"
export DOTNET_NOLOGO=1 DOTNET_CLI_TELEMETRY_OPTOUT=1 DOTNET_SKIP_FIRST_TIME_EXPERIENCE=1
echo "clean HOME=$HOME NUGET_PACKAGES=$NUGET_PACKAGES"

step "dotnet tool install -g MergeDsl.Cli --add-source artifacts"
dotnet tool install -g MergeDsl.Cli --version "$version" --add-source "$repo/artifacts"
mergedsl="$DOTNET_CLI_HOME/.dotnet/tools/mergedsl"

step "mergedsl --version / methods"
got=$("$mergedsl" --version)
echo "$got"
[ "$got" = "mergedsl $version" ] || { echo "FAILED: mergedsl --version printed '$got', the package is $version"; exit 1; }
"$mergedsl" methods > "$tmp/methods.txt"
head -5 "$tmp/methods.txt"
for m in average ties dare-ties wemoe; do
  grep -q "$m" "$tmp/methods.txt" || { echo "FAILED: mergedsl methods does not list $m"; exit 1; }
done
toollib=$(find "$DOTNET_CLI_HOME/.dotnet/tools/.store" -name libLibTorchSharp.so | head -1)
[ -n "$toollib" ] || { echo "FAILED: the installed tool has no libLibTorchSharp.so"; exit 1; }

step "dotnet fsi: #r \"nuget: MergeDsl, $version\" from the local feed, merge, then mergedsl run average"
cat > "$tmp/work/check.fsx" <<FSX
#i "nuget: $repo/artifacts"
#r "nuget: MergeDsl, $version"
#load "$repo/scripts/checks/package-use.fsx"
FSX
dotnet fsi "$tmp/work/check.fsx" "$tmp/work" "$mergedsl" "$toollib"

step "done"
