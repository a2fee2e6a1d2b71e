#!/usr/bin/env bash
# Launches `indexcache train` (or --command eval / search) with one rank per GPU, on one node or many.
#
#   tools/launch.sh --gpus 8 -- --config configs/distill_v32.textproto --set parallel.pipeline_stages=4
#   tools/launch.sh --gpus 8 --command eval -- --model DIR --data D --seq-len 32768 --pipeline-stages 8
#   tools/launch.sh --gpus 8 --hostfile hosts.txt -- --config ... --set optimizer.lr=5e-4
#   tools/launch.sh --slurm --gpus 8 -- --config ...          # inside an salloc/sbatch allocation
#
# --gpus is GPUs per node. With a hostfile (OpenMPI format: "node1 slots=8"), every listed node
# runs that many ranks; each rank picks the GPU of its local rank. Everything after "--" goes to
# `indexcache train`. The binary is bazel-bin/tools/indexcache unless INDEXCACHE_BIN says
# otherwise; it must exist at the same path on every node (a shared file system, or a copy).
# Ranks r = stage r % P of replica r / P: a pipeline's stages are neighbouring ranks (one node).
set -euo pipefail
cd "$(dirname "$0")/.."

gpus=1 hostfile="" slurm=0 command=train
while [[ $# -gt 0 ]]; do
  case "$1" in
    --gpus) gpus="$2"; shift 2 ;;
    --hostfile) hostfile="$2"; shift 2 ;;
    --slurm) slurm=1; shift ;;
    --command) command="$2"; shift 2 ;;
    --) shift; break ;;
    -h|--help) sed -n '2,15p' "$0"; exit 0 ;;
    *) echo "launch.sh: unknown option '$1' (try --help)" >&2; exit 1 ;;
  esac
done
case "$command" in train|eval|search) ;; *) echo "launch.sh: --command must be train, eval or search" >&2; exit 1 ;; esac
bin="${INDEXCACHE_BIN:-$PWD/bazel-bin/tools/indexcache}"
[[ -x "$bin" ]] || { echo "launch.sh: $bin not found; build it with: bazel build -c opt //tools:indexcache" >&2; exit 1; }

if [[ $slurm -eq 1 ]]; then
  nodes="${SLURM_JOB_NUM_NODES:-1}"
  exec srun --nodes="$nodes" --ntasks-per-node="$gpus" --gpus-per-node="$gpus" --kill-on-bad-exit=1 \
    "$bin" "$command" "$@"
fi

args=(--bind-to none --map-by "ppr:${gpus}:node" -x PATH -x LD_LIBRARY_PATH -x NCCL_DEBUG)
if [[ $(id -u) -eq 0 ]]; then args+=(--allow-run-as-root); fi
if [[ -n "$hostfile" ]]; then
  nodes=$(grep -cv '^\s*\(#\|$\)' "$hostfile")
  args+=(--hostfile "$hostfile")
else
  nodes=1
fi
exec mpirun -np $((nodes * gpus)) "${args[@]}" "$bin" "$command" "$@"
