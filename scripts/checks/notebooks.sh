#!/usr/bin/env bash
# Executes the notebooks of docs/notebooks headlessly with dotnet-repl (a local tool, .config/dotnet-tools.json)
# and writes the executed copies, outputs included, to OUT_DIR. A failing cell does not stop dotnet-repl's run;
# it shows as an error output in the executed copy, so this script fails when any copy holds one.
#   scripts/checks/notebooks.sh OUT_DIR [NOTEBOOK.ipynb ...]     (default: every docs/notebooks/*.ipynb)
#   scripts/checks/notebooks.sh --commit                          (executes them in place, to commit their outputs)
# Needs the Release build of the CLI (`dotnet build src/MergeDsl.Cli -c Release`): the notebooks #r it.
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
cd "$root"
[ $# -ge 1 ] || { echo "usage: $0 OUT_DIR [NOTEBOOK.ipynb ...] | --commit" >&2; exit 2; }
in_place=false
if [ "$1" = "--commit" ]; then in_place=true; out=""; else out="$(mkdir -p "$1" && cd "$1" && pwd)"; fi
shift
notebooks=("$@")
[ ${#notebooks[@]} -gt 0 ] || notebooks=(docs/notebooks/*.ipynb)
[ -f src/MergeDsl.Cli/bin/Release/net10.0/MergeDsl.Cli.dll ] || { echo "build first: dotnet build src/MergeDsl.Cli -c Release" >&2; exit 2; }
dotnet tool restore >/dev/null
failed=0
for nb in "${notebooks[@]}"; do
  nb="$(cd "$(dirname "$nb")" && pwd)/$(basename "$nb")"
  name="$(basename "$nb")"
  if $in_place; then target="$(mktemp -d)/$name"; else target="$out/$name"; fi
  start=$(date +%s)
  # Relative #r paths resolve against the notebook's folder.
  rc=0
  (cd "$(dirname "$nb")" && dotnet tool run dotnet-repl -- --run "$nb" --exit-after-run --default-kernel fsharp \
      --output-path "$target" >"$target.log" 2>&1) || rc=$?
  seconds=$(( $(date +%s) - start ))
  if [ ! -f "$target" ]; then
    echo "$name: no executed notebook written (dotnet-repl exit $rc, log $target.log)"; failed=1; continue
  fi
  if grep -Eq '"output_type": *"error"' "$target" || [ $rc -ne 0 ]; then
    echo "$name: FAILED in ${seconds} s (a cell failed; dotnet-repl exit $rc; see the error outputs in $target)"; failed=1
  else
    echo "$name: ok in ${seconds} s"
    if $in_place; then cp "$target" "$nb"; fi
  fi
done
exit $failed
