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
echo "${passed} passed, ${failed} failed, ${skipped} skipped"
exit $status
