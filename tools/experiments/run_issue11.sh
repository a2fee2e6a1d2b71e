#!/usr/bin/env bash
# Issue 11's re-measurement on one GPU, in one call (device time is scarce): the GPU tests of main,
# then `indexcache bench` (ceilings, the indexer and sparse MLA kernels at V3.2 sizes, the layer
# stack's prefill and decode under all-F and 1/4 at 32K and 128K), `bench --distill` with the
# current loss kernel, and the FP8 latent cache kernels. Build here first and pack:
#   .device-carry/gpu_tests.tar.xz  the GPU test binaries (tools/device_checks.sh)
#   .device-carry/bin.tar.xz        indexcache, latent_fp8_cuda_bench
# then on the device: bash tools/experiments/run_issue11.sh $OUT
set -uo pipefail
out=${1:?usage: run_issue11.sh OUT_DIR}
mkdir -p .device-bin && tar xJf .device-carry/bin.tar.xz -C .device-bin
nvidia-smi --query-gpu=name,clocks.sm --format=csv,noheader > "$out/device.txt"
bash tools/device_checks.sh "$out/checks.log" 120 > "$out/checks_summary.txt" 2>&1
.device-bin/indexcache bench --contexts 32768,131072 --patterns all,1/4 --decode-steps 8 \
  --json "$out/bench.json" > "$out/bench.txt" 2>&1
.device-bin/indexcache bench --skip-kernels --skip-stack --distill --distill-layers 4 \
  --distill-seq 8192,32768 > "$out/distill.txt" 2>&1
.device-bin/latent_fp8_cuda_bench > "$out/latent_fp8.txt" 2>&1
