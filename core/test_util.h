// Small helpers shared by the tests (testonly): scratch directories, raw file bytes, commands.
#pragma once

#include <string>

namespace indexcache {

// A fresh directory under the test's temporary directory ($TEST_TMPDIR under Bazel).
std::string MakeTempDir(const std::string& prefix = "indexcache");
// Writes / reads a whole file as bytes; failures are reported as test failures.
void WriteBytes(const std::string& path, const std::string& bytes);
std::string ReadBytes(const std::string& path);
// Runs a shell command under `timeout` (a hang becomes exit 124, not a stuck test), appending its
// stdout and (unless merge_stderr is false: then it is dropped) stderr to *output; returns the exit
// code, or 128 + signal.
int RunShell(const std::string& cmd, std::string* output, int timeout_seconds = 120, bool merge_stderr = true);

}  // namespace indexcache
