#!/bin/bash
# A partitioned merge on Slurm: one statistics job, an array of N part jobs, one finalize job, chained with
# dependencies. Every node must see MERGEDSL, the input folders and the parent folder of OUT at the same paths
# (a shared file system: NFS, Lustre, GPFS, CephFS, or an object store mounted with e.g. s3fs/goofys).
#
#   N=8 OUT=/shared/merged bash deploy/slurm-merge.sh ties --base /shared/base --model /shared/e1 --model /shared/e2
#
# The arguments after the script are those of `mergedsl run` without --out; every job gets the same ones, so
# the parts write the shards, model card and metadata a single `mergedsl run ... --out OUT` would write.
# Check the partition first: `mergedsl plan <arguments> --parts N` (it also says whether a statistics step is needed).
set -euo pipefail
: "${N:?set N, the number of parts}"
: "${OUT:?set OUT, the output folder on the shared file system}"
MERGEDSL=${MERGEDSL:-mergedsl}
PARTITION_OPTS=${PARTITION_OPTS:-}          # extra sbatch options (partition, account, time, memory)
MAX_MEMORY=${MAX_MEMORY:-}                  # e.g. 16GB: pass --max-memory to every part (must fit the node's allocation)
mem=(); [ -n "$MAX_MEMORY" ] && mem=(--max-memory "$MAX_MEMORY")
args=$(printf ' %q' "$@")

stats=$(sbatch --parsable $PARTITION_OPTS --job-name=mergedsl-stats \
  --wrap="$MERGEDSL run$args --out $(printf %q "$OUT") --stats ${mem[*]:-}")
# --part auto/N takes the index from SLURM_ARRAY_TASK_ID (0..N-1). --resume: a requeued task continues its
# finished shards instead of starting over.
parts=$(sbatch --parsable $PARTITION_OPTS --job-name=mergedsl-part --array=0-$((N - 1)) --requeue \
  --dependency=afterok:$stats \
  --wrap="$MERGEDSL run$args --out $(printf %q "$OUT") --part auto/$N --resume ${mem[*]:-}")
final=$(sbatch --parsable $PARTITION_OPTS --job-name=mergedsl-finalize --dependency=afterok:$parts \
  --wrap="$MERGEDSL finalize $(printf %q "$OUT")")
echo "statistics job $stats, part array $parts (0-$((N - 1))), finalize job $final"
