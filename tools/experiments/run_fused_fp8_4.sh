#!/usr/bin/env bash
# Final check of the fused FP8 cache: the kernel bench's decode rows (FP8 loader: polling with
# try_wait against in-order) first, then every GPU test of main. Pack .device-carry/gpu_tests.tar.xz
# and .device-carry/bin.tar.xz (sparse_mla_cuda_bench); bash tools/experiments/run_fused_fp8_4.sh $OUT
set -uo pipefail
out=${1:?usage: run_fused_fp8_4.sh OUT_DIR}
mkdir -p .device-bin && tar xJf .device-carry/bin.tar.xz -C .device-bin
timeout 90 .device-bin/sparse_mla_cuda_bench > "$out/sparse_mla.txt" 2>&1; echo "bench rc=$?"
bash tools/device_checks.sh "$out/checks.log" 60 > "$out/checks_summary.txt" 2>&1; echo "checks rc=$?"
