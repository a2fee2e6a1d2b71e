// Small helpers shared by the tests (testonly): scratch directories and raw file bytes.
#pragma once

#include <string>

namespace indexcache {

// A fresh directory under the test's temporary directory ($TEST_TMPDIR under Bazel).
std::string MakeTempDir(const std::string& prefix = "indexcache");
// Writes / reads a whole file as bytes; failures are reported as test failures.
void WriteBytes(const std::string& path, const std::string& bytes);
std::string ReadBytes(const std::string& path);

}  // namespace indexcache
