// The CUDA backend against the CPU reference on the Hugging Face fixtures: relative L2 on logits
// and argmax agreement within the bf16 tolerances of kernels/tolerances.h. Skips without a GPU.
#include <cmath>
#include <string>

#include <gtest/gtest.h>

#include "core/cuda_check.h"
#include "data/token_array.h"
#include "kernels/tolerances.h"
#include "model/dsa_model.h"

namespace indexcache {
namespace {

class GpuParityTest : public ::testing::TestWithParam<std::string> {};

TEST_P(GpuParityTest, CudaLogitsMatchCpu) {
  if (!CudaDeviceAvailable()) GTEST_SKIP() << "no CUDA device";
  const std::string dir = "tests/data/" + GetParam();
  auto cpu = DsaModel::Load(dir, std::nullopt, "cpu");
  auto gpu = DsaModel::Load(dir, std::nullopt, "cuda");
  ASSERT_TRUE(cpu.ok()) << cpu.status().ToString();
  ASSERT_TRUE(gpu.ok()) << gpu.status().ToString();
  auto tokens = ReadTokenArray(dir + "/tokens.npy", cpu->config().vocab_size);
  ASSERT_TRUE(tokens.ok());
  const int64_t V = cpu->config().vocab_size;
  for (int64_t b = 0; b < tokens->rows(); ++b) {
    auto want = cpu->Forward(tokens->Row(b));
    auto got = gpu->Forward(tokens->Row(b));
    ASSERT_TRUE(want.ok() && got.ok());
    double num = 0, den = 0;
    int64_t agree = 0;
    const int64_t T = want->logits.size(0);
    for (int64_t t = 0; t < T; ++t) {
      const float* w = want->logits.data<float>() + t * V;
      const float* g = got->logits.data<float>() + t * V;
      int64_t aw = 0, ag = 0;
      for (int64_t v = 0; v < V; ++v) {
        num += (double(g[v]) - w[v]) * (double(g[v]) - w[v]);
        den += double(w[v]) * w[v];
        if (w[v] > w[aw]) aw = v;
        if (g[v] > g[ag]) ag = v;
      }
      agree += aw == ag;
    }
    const double rel = std::sqrt(num / den);
    std::printf("%s row %lld: relative L2 %.3e, argmax agreement %.4f\n", dir.c_str(), static_cast<long long>(b), rel,
                double(agree) / T);
    EXPECT_LE(rel, kParityRelL2Bf16);
    EXPECT_GE(double(agree) / T, kParityArgmaxAgreeBf16);
  }
}

INSTANTIATE_TEST_SUITE_P(Fixtures, GpuParityTest,
                         ::testing::Values("dsv32_moe_groups", "dsv32_yarn_fp8", "glm_shared_bf16"));

}  // namespace
}  // namespace indexcache
