#!/usr/bin/env bash
# Issue 11, the FP8 latent cache read in place by the sparse MLA: on one GPU, in one call, the new
# kernel test first, the sparse MLA kernel bench (prefill + decode, bf16 / FP8 fused / FP8 gathered)
# with the SM clock and power logged beside it (nvidia-smi every 100 ms: did the earlier benches'
# disagreement come from clocks?), `indexcache bench` kernels at 32K / 128K under the same log, then
# every GPU test. Build and pack first (.device-carry/gpu_tests.tar.xz, .device-carry/bin.tar.xz with
# indexcache and sparse_mla_cuda_bench); on the device: bash tools/experiments/run_fused_fp8.sh $OUT
set -uo pipefail
out=${1:?usage: run_fused_fp8.sh OUT_DIR}
mkdir -p .device-bin /tmp/gpu_tests && tar xJf .device-carry/bin.tar.xz -C .device-bin
tar xJf .device-carry/gpu_tests.tar.xz -C /tmp/gpu_tests
nvidia-smi --query-gpu=name,clocks.sm,clocks.max.sm,power.limit --format=csv > "$out/device.txt"
timeout 120 /tmp/gpu_tests/kernels_sparse_mla_fp8_cuda_test > "$out/fp8_test.txt" 2>&1
echo "fp8 test rc=$?" >> "$out/fp8_test.txt"
nvidia-smi --query-gpu=timestamp,clocks.sm,power.draw,temperature.gpu --format=csv,noheader -lms 100 > "$out/smi.csv" &
smi=$!
echo "kernel_bench_start $(date +%T.%N)" > "$out/marks.txt"
.device-bin/sparse_mla_cuda_bench --json "$out/sparse_mla.json" > "$out/sparse_mla.txt" 2>&1
echo "indexcache_bench_start $(date +%T.%N)" >> "$out/marks.txt"
.device-bin/indexcache bench --contexts 32768,131072 --skip-stack > "$out/bench_kernels.txt" 2>&1
echo "end $(date +%T.%N)" >> "$out/marks.txt"
kill $smi
${SKIP_TESTS:+exit 0}
bash tools/device_checks.sh "$out/checks.log" 120 > "$out/checks_summary.txt" 2>&1
