#!/bin/bash
# Runs a partitioned merge as N local processes (concurrent, or one after another with SEQUENTIAL=1), then
# finalize, printing the wall time of each step: a laptop stand-in for a cluster, and the benchmark of
# docs/benchmarks.md ("Partitioned merges").
#   N=4 OUT=/tmp/merged bash deploy/local-parts.sh task-arithmetic --base B --model E1 --model E2 --shard-size 100MB
set -euo pipefail
: "${N:?set N}"; : "${OUT:?set OUT}"
MERGEDSL=${MERGEDSL:-mergedsl}
now() { date +%s.%N; }
t0=$(now)
$MERGEDSL run "$@" --out "$OUT" --stats -q
t1=$(now)
if [ "${SEQUENTIAL:-0}" = 1 ]; then
  for ((i = 0; i < N; i++)); do $MERGEDSL run "$@" --out "$OUT" --part "$i/$N" -q; done
else
  pids=()
  for ((i = 0; i < N; i++)); do $MERGEDSL run "$@" --out "$OUT" --part "$i/$N" -q & pids+=($!); done
  for p in "${pids[@]}"; do wait "$p"; done
fi
t2=$(now)
# Bytes each part read and wrote, from its manifest (before finalize removes OUT.parts).
for m in "$OUT".parts/part-*/part.json; do
  python3 -c 'import json,sys; m=json.load(open(sys.argv[1])); print("  part %d/%d: %d shards, read %.3f GB, wrote %.3f GB, %.1f s" % (m["part"], m["parts"], len(m["shards"]), m["bytesRead"]/1e9, m["bytesWritten"]/1e9, m["seconds"]))' "$m"
done
$MERGEDSL finalize "$OUT"
t3=$(now)
python3 -c "import sys; s,p,f,e=map(float,sys.argv[1:]); print(f'N=$N: statistics {p-s:.2f} s, parts {f-p:.2f} s, finalize {e-f:.2f} s, total {e-s:.2f} s')" "$t0" "$t1" "$t2" "$t3"
