#!/usr/bin/env bash
# Third round of the fused FP8 cache (power-of-two scales, integer + bf16x2 dequantisation), each
# step under its own timeout: the tests, the kernel bench, batched decode at 128K with B = 64.
# Pack .device-carry/run2.tar.xz as for run_fused_fp8_2.sh; bash tools/experiments/run_fused_fp8_3.sh $OUT
set -uo pipefail
out=${1:?usage: run_fused_fp8_3.sh OUT_DIR}
b=/tmp/run2 && mkdir -p $b && tar xJf .device-carry/run2.tar.xz -C $b
for t in kernels_sparse_mla_fp8_cuda_test tests_gpu_batched_decode_test kernels_latent_fp8_test; do
  s=$(date +%s); timeout 60 $b/$t > "$out/$t.txt" 2>&1; echo "$t rc=$? $(( $(date +%s) - s )) s"
done
timeout 90 $b/sparse_mla_cuda_bench > "$out/sparse_mla.txt" 2>&1; echo "bench rc=$?"
timeout 150 $b/indexcache bench --skip-kernels --skip-stack --contexts 131072 --patterns all,1/4 --decode-batch 64,128 \
  --decode-cache bf16,fp8,fp8-gather --decode-steps 8 --json "$out/decode.json" > "$out/decode.txt" 2>&1; echo "decode rc=$?"
