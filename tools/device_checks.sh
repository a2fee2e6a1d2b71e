#!/usr/bin/env bash
# Runs the GPU tests on the device machine (no Bazel there): build here, pack the test binaries
# into .device-carry/gpu_tests.tar.xz (xz keeps the carry under its 64 MiB), carry it, and run
#   bash tools/device_checks.sh $OUT/gpu_checks.log [per-test timeout s]
# from the repository root (tests read their fixtures by repository-relative paths). Prints one
# PASS/FAIL line per binary and the gtest summary lines; the full output goes to the log.
set -uo pipefail
log=$1 per_test=${2:-120}
dir=/tmp/gpu_tests
rm -rf "$dir" && mkdir -p "$dir" && tar xJf .device-carry/gpu_tests.tar.xz -C "$dir"
status=0
for t in "$dir"/*; do
  name=$(basename "$t")
  start=$(date +%s)
  timeout "$per_test" "$t" --gtest_brief=1 >> "$log" 2>&1
  rc=$?
  echo "== $name rc=$rc $(( $(date +%s) - start )) s" | tee -a "$log"
  [[ $rc == 0 ]] || status=1
done
grep -E "^\[  (PASSED|FAILED|SKIPPED) |^\[  FAILED  \]" "$log" | sort | uniq -c | head -40
exit $status
