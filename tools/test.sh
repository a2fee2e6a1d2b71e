#!/usr/bin/env bash
# Runs the whole test suite and prints a final line "N passed, N failed" (per test case, from the
# JUnit XML files Bazel writes). GPU tests skip where there is no GPU.
set -uo pipefail
cd "$(dirname "$0")/.."

# The project's packages, listed rather than //...: Bazel's convenience symlink to the execroot is
# named after the checkout's folder (bazel-<folder>), which .bazelignore cannot know in advance.
targets=()
for build in */BUILD; do
  dir=${build%/BUILD}
  case "$dir" in bazel-*|third_party) continue ;; esac
  targets+=("//$dir/...")
done
bazel test -c opt "${targets[@]}" "$@"
status=$?

# Count test cases across every test target's XML report.
read -r passed failed skipped < <(python3 - <<'PY'
import glob, xml.etree.ElementTree as ET
passed = failed = skipped = 0
for path in glob.glob("bazel-testlogs/**/test.xml", recursive=True):
    try:
        root = ET.parse(path).getroot()
    except ET.ParseError:
        failed += 1
        continue
    for case in root.iter("testcase"):
        if case.find("failure") is not None or case.find("error") is not None:
            failed += 1
        elif case.find("skipped") is not None or case.get("result") == "skipped" or case.get("status") == "notrun":
            skipped += 1
        else:
            passed += 1
print(passed, failed, skipped)
PY
)
# A build failure or a crashed test binary has no cases to count: count it as a failure.
if [[ $status -ne 0 && $failed -eq 0 ]]; then failed=1; fi

# The libFuzzer harnesses (fuzz/, tools/fuzz.sh), each for a short smoke run: every harness counts
# as one case. INDEXCACHE_FUZZ_SECONDS sets the time per harness (0 skips them).
fuzz_seconds=${INDEXCACHE_FUZZ_SECONDS:-10}
if [[ "$fuzz_seconds" -eq 0 ]]; then
  echo "fuzz: skipped (INDEXCACHE_FUZZ_SECONDS=0)"
  skipped=$((skipped + 8))
elif ! command -v clang++-14 >/dev/null && ! command -v clang++ >/dev/null; then
  echo "fuzz: clang++ not found; the 8 harnesses are skipped (tools/setup.sh installs clang-14)"
  skipped=$((skipped + 8))
else
  fuzz_out=$(tools/fuzz.sh "$fuzz_seconds" 2>&1)
  fuzz_status=$?
  echo "$fuzz_out" | grep '^fuzz: '
  read -r fuzz_passed fuzz_failed < <(echo "$fuzz_out" | sed -n 's/^fuzz: \([0-9]*\) passed, \([0-9]*\) failed$/\1 \2/p' | tail -1)
  passed=$((passed + ${fuzz_passed:-0}))
  failed=$((failed + ${fuzz_failed:-1}))
  if [[ $fuzz_status -ne 0 && $status -eq 0 ]]; then status=1; fi
fi

echo "${passed} passed, ${failed} failed, ${skipped} skipped"
exit $status
