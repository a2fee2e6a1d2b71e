#include "core/test_util.h"

#include <stdlib.h>
#include <sys/wait.h>

#include <cstdio>

#include <fstream>
#include <sstream>
#include <vector>

#include <gtest/gtest.h>

#include "core/file_util.h"

namespace indexcache {

std::string MakeTempDir(const std::string& prefix) {
  const std::string tmpl = JoinPath(::testing::TempDir(), prefix + "_XXXXXX");
  std::vector<char> buf(tmpl.begin(), tmpl.end());
  buf.push_back('\0');
  const char* dir = ::mkdtemp(buf.data());
  if (dir == nullptr) {
    ADD_FAILURE() << "mkdtemp failed for " << tmpl;
    return ::testing::TempDir();
  }
  return dir;
}

void WriteBytes(const std::string& path, const std::string& bytes) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  if (!out.good()) ADD_FAILURE() << "cannot write " << path;
}

std::string ReadBytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in.good()) ADD_FAILURE() << "cannot read " << path;
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

double RelL2(const std::vector<float>& got, const std::vector<float>& want) {
  EXPECT_EQ(got.size(), want.size()) << "RelL2 of vectors of different sizes";
  return RelL2(got.data(), want.data(), static_cast<int64_t>(std::min(got.size(), want.size())));
}

double RelL2(const Tensor& got, const Tensor& want) {
  EXPECT_EQ(got.shape(), want.shape()) << "RelL2 of tensors of different shapes";
  EXPECT_TRUE(got.dtype() == DType::kF32 && want.dtype() == DType::kF32) << "RelL2 of tensors that are not float32";
  return RelL2(got.data<float>(), want.data<float>(), std::min(got.numel(), want.numel()));
}

double RelL2OfChange(const std::vector<float>& got, const std::vector<float>& want, const std::vector<float>& init) {
  EXPECT_TRUE(got.size() == want.size() && want.size() == init.size()) << "RelL2OfChange of vectors of different sizes";
  double num = 0, den = 0;
  for (size_t i = 0; i < got.size(); ++i) {
    const double g = double(got[i]) - init[i], w = double(want[i]) - init[i];
    num += (g - w) * (g - w);
    den += w * w;
  }
  return std::sqrt(num / std::max(den, 1e-300));
}

int RunShell(const std::string& cmd, std::string* output, int timeout_seconds, bool merge_stderr) {
  const std::string full = "timeout " + std::to_string(timeout_seconds) + " " + cmd + (merge_stderr ? " 2>&1" : " 2>/dev/null");
  FILE* pipe = popen(full.c_str(), "r");
  if (!pipe) return -1;
  char buf[4096];
  size_t n;
  while ((n = fread(buf, 1, sizeof(buf), pipe)) > 0) output->append(buf, n);
  const int status = pclose(pipe);
  return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

}  // namespace indexcache
