// Small helpers shared by the tests (testonly): scratch directories, raw file bytes, commands,
// and the relative L2 error every numerical test compares with. (Device memory for the CUDA
// tests: the move-only DeviceBuffer of core/device_buffer.h.)
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <string>
#include <vector>

#include "core/tensor.h"

namespace indexcache {

// ||got - want||_2 / ||want||_2 over n elements, accumulated in fp64. An all-zero `want` divides
// by 1e-30 instead of 0, so equal zeros give 0 and anything else a huge error, never NaN.
template <typename G, typename W>
double RelL2(const G* got, const W* want, int64_t n) {
  double num = 0.0, den = 0.0;
  for (int64_t i = 0; i < n; ++i) {
    const double d = static_cast<double>(got[i]) - static_cast<double>(want[i]);
    num += d * d;
    den += static_cast<double>(want[i]) * static_cast<double>(want[i]);
  }
  return std::sqrt(num / std::max(den, 1e-30));
}
// The same over whole vectors (a size mismatch is a test failure), and over float32 tensors (a
// shape mismatch is a test failure).
double RelL2(const std::vector<float>& got, const std::vector<float>& want);
double RelL2(const Tensor& got, const Tensor& want);
// The relative L2 error of an accumulated change: got and want both started at `init` (e.g.
// gradients added onto non-zero buffers), and only what was added is compared:
// ||(got - init) - (want - init)||_2 / ||want - init||_2.
double RelL2OfChange(const std::vector<float>& got, const std::vector<float>& want, const std::vector<float>& init);

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
