#!/usr/bin/env bash
# Second round of the fused FP8 cache: its tests, the kernel bench (decode rows: bf16, FP8 in place
# with the polling and in-order loaders, FP8 gathered), then batched decode in the runtime with the
# three caches. Pack .device-carry/run2.tar.xz (the five test binaries, indexcache,
# sparse_mla_cuda_bench); on the device: bash tools/experiments/run_fused_fp8_2.sh $OUT
set -uo pipefail
out=${1:?usage: run_fused_fp8_2.sh OUT_DIR}
b=/tmp/run2 && mkdir -p $b && tar xJf .device-carry/run2.tar.xz -C $b
for t in $b/*_test; do timeout 120 $t --gtest_brief=1 > "$out/$(basename $t).txt" 2>&1; echo "$(basename $t) rc=$?"; done
$b/sparse_mla_cuda_bench > "$out/sparse_mla.txt" 2>&1
$b/indexcache bench --skip-kernels --skip-stack --contexts 32768,131072 --patterns all,1/4 --decode-batch 64,128 \
  --decode-cache bf16,fp8,fp8-gather --decode-steps 8 --json "$out/decode.json" > "$out/decode.txt" 2>&1
