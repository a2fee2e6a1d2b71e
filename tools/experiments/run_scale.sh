#!/usr/bin/env bash
# Issue 10's real-size measurements on a 2 x H200 machine (device kind nvidia-h200-x2): full-size
# DeepSeek-V3.2 layers (MoE 256 x 2048, FP8-resident random weights) in distillation, on 1 GPU and
# pipelined over 2. Binaries are built here and carried (.device-bin: indexcache, nccl_comm_test,
# moe_cuda_bench; .device-carry/gpu_tests.tar.xz for tools/device_checks.sh). Run from the repo
# root with OUT set:
#   bash tools/experiments/run_scale.sh part1   # GPU tests, MoE bench, stage link, 8 layers on 1 GPU (32K, 128K)
#   bash tools/experiments/run_scale.sh part2   # the same 8 layers over 2 stages, then 16 layers over 2 stages
set -uo pipefail
part=${1:?part1, part2 or part3}
B=${B:-.device-bin}
MPI="mpirun --allow-run-as-root --bind-to none -np 2"
D="--skip-kernels --skip-stack --distill --distill-moe --distill-pattern 1/4"
run() { echo "+ $*" | tee -a "$OUT/scale.txt"; "$@" 2>&1 | grep -v "^$" | grep -v "^Ceilings\|^## " | tail -6 | tee -a "$OUT/scale.txt"; }
case $part in
  part3) ;;
  part1)
    bash tools/device_checks.sh "$OUT/checks.log" 240 | tail -12
    $MPI $B/nccl_comm_test 2>&1 | grep -E "all-reduce|stage link|PASSED|FAILED" | tee -a "$OUT/scale.txt"
    $B/moe_cuda_bench --json "$OUT/moe_bench.json" 2>&1 | tail -9 | tee "$OUT/moe_bench.txt"
    run $B/indexcache bench $D --distill-layers 8 --distill-seq 32768 --distill-modes sparse,dense
    run $B/indexcache bench $D --distill-layers 8 --distill-seq 131072 --distill-modes sparse
    ;;
  part2)
    run $MPI $B/indexcache bench $D --distill-layers 8 --pipeline-stages 2 --distill-micro 4 --distill-seq 32768 --distill-modes sparse,dense
    run $MPI $B/indexcache bench $D --distill-layers 8 --pipeline-stages 2 --distill-micro 4 --distill-seq 131072 --distill-modes sparse
    run $MPI $B/indexcache bench $D --distill-layers 16 --pipeline-stages 2 --distill-micro 2 --distill-seq 32768,131072 --distill-modes sparse
    ;;
esac
# part3: eval and search pipelined over 2 GPUs with the NCCL stage link, against 1 GPU (a small
# fixture model: the results must be equal).
if [[ $part == part3 ]]; then
  M=tests/data/dsv32_gentle_bf16
  for cmd in "eval --seq-len 48" "search --seq-len 48 --target 2"; do
    echo "+ $cmd (1 GPU, then 2 stages)" | tee -a "$OUT/scale.txt"
    out1=() out2=()
    [[ $cmd == search* ]] && out1=(--out /tmp/search1) out2=(--out /tmp/search2) && rm -rf /tmp/search1 /tmp/search2
    $B/indexcache $cmd "${out1[@]}" --model $M --data $M/tokens.npy --device cuda 2>&1 | tail -3 | tee -a "$OUT/scale.txt"
    $MPI $B/indexcache $cmd "${out2[@]}" --model $M --data $M/tokens.npy --device cuda --pipeline-stages 2 2>&1 | tail -3 | tee -a "$OUT/scale.txt"
  done
fi
