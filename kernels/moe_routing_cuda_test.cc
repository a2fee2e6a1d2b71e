// MoeRoutingCuda against MoeRoutingCpu: the same experts in the same order (exactly), weights to
// 1e-6 relative (in practice bitwise), on odd token counts and the configurations that matter:
// DeepSeek-V3.2's (E 256, 8 groups, keep 4, k 8), one group (E 64), 3 groups of 24 (E 72), and a
// router at its limit (E 1024, 32 groups). Then deliberate ties (equal logits, equal groups) and
// non-finite logits / biases, whose outcome moe_routing.h defines. Skips without a CUDA device.
#include "kernels/moe_routing_cuda.h"

#include <cmath>
#include <limits>
#include <random>
#include <vector>

#include "core/cuda_check.h"
#include "core/device_buffer.h"
#include "gtest/gtest.h"
#include "kernels/moe_routing.h"

namespace indexcache {
namespace {

struct Case {
  int64_t T, E, n_group, topk_group, topk;
  bool norm = true;
  float scaling = 1.0f;
  std::vector<float> logits, bias;  // bias empty = none
};

Case Random(int64_t T, int64_t E, int64_t n_group, int64_t topk_group, int64_t topk, uint32_t seed) {
  Case c{T, E, n_group, topk_group, topk};
  std::mt19937 rng(seed);
  std::normal_distribution<float> n(0.0f, 1.5f);
  c.logits.resize(T * E);
  for (float& x : c.logits) x = n(rng);
  c.bias.resize(E);
  for (float& x : c.bias) x = 0.1f * n(rng);
  return c;
}

MoeRoutingParams Params(const Case& c, const float* logits, const float* bias, int32_t* experts, float* weights) {
  MoeRoutingParams p;
  p.logits = logits;
  p.bias = c.bias.empty() ? nullptr : bias;
  p.T = c.T;
  p.E = c.E;
  p.n_group = c.n_group;
  p.topk_group = c.topk_group;
  p.topk = c.topk;
  p.norm_topk_prob = c.norm;
  p.routed_scaling_factor = c.scaling;
  p.out_experts = experts;
  p.out_weights = weights;
  return p;
}

// Routes on both sides; experts must agree as ordered lists, weights within 1e-6 relative (NaN
// where the CPU has NaN).
void ExpectSame(const Case& c) {
  std::vector<int32_t> want_e(c.T * c.topk);
  std::vector<float> want_w(c.T * c.topk);
  MoeRoutingCpu(Params(c, c.logits.data(), c.bias.data(), want_e.data(), want_w.data()));
  DeviceBuffer<float> logits(c.logits.size()), bias(std::max<size_t>(c.bias.size(), 1));
  logits.CopyFrom(c.logits);
  if (!c.bias.empty()) bias.CopyFrom(c.bias);
  DeviceBuffer<int32_t> experts(c.T * c.topk);
  DeviceBuffer<float> weights(c.T * c.topk);
  MoeRoutingCuda(Params(c, logits.ptr, bias.ptr, experts.ptr, weights.ptr), nullptr);
  CUDA_CHECK(cudaDeviceSynchronize());
  const std::vector<int32_t> got_e = experts.ToHost();
  const std::vector<float> got_w = weights.ToHost();
  int bad = 0;
  for (int64_t i = 0; i < c.T * c.topk && bad < 5; ++i) {
    if (got_e[i] != want_e[i]) {
      ADD_FAILURE() << "E " << c.E << " token " << i / c.topk << " choice " << i % c.topk << ": expert " << got_e[i]
                    << ", CPU " << want_e[i];
      ++bad;
    } else if (std::isnan(want_w[i])) {
      EXPECT_TRUE(std::isnan(got_w[i])) << "token " << i / c.topk;
    } else if (!(std::fabs(got_w[i] - want_w[i]) <= 1e-6f * std::fabs(want_w[i]))) {
      ADD_FAILURE() << "token " << i / c.topk << " choice " << i % c.topk << ": weight " << got_w[i] << ", CPU "
                    << want_w[i];
      ++bad;
    }
  }
}

class MoeRoutingCudaTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!CudaDeviceAvailable()) GTEST_SKIP() << "no CUDA device";
  }
};

TEST_F(MoeRoutingCudaTest, DeepSeekV32Shape) {
  for (int64_t T : {1, 3, 4, 5, 127, 1001}) ExpectSame(Random(T, 256, 8, 4, 8, 11 + T));
  Case c = Random(333, 256, 8, 4, 8, 5);
  c.scaling = 2.5f;
  ExpectSame(c);
}

TEST_F(MoeRoutingCudaTest, OneGroupAndThreeGroupsAndLimits) {
  ExpectSame(Random(77, 64, 1, 1, 6, 1));
  ExpectSame(Random(77, 72, 3, 2, 8, 2));
  ExpectSame(Random(9, 1024, 32, 5, 32, 3));
  ExpectSame(Random(9, 7, 1, 1, 7, 4));  // k = E: every expert, ordered
  Case no_norm = Random(31, 72, 3, 1, 5, 6);
  no_norm.norm = false;
  no_norm.scaling = 1.7f;
  ExpectSame(no_norm);
  Case no_bias = Random(31, 256, 8, 4, 8, 7);
  no_bias.bias.clear();
  ExpectSame(no_bias);
}

// Equal logits everywhere: every group rates the same, so the lowest topk_group groups stay and
// the lowest experts in them are chosen, in index order. Then pairs of tied experts and tied
// groups scattered among random ones, and logits so large that sigmoid saturates to exactly 1.
TEST_F(MoeRoutingCudaTest, TiesGoToTheLowerIndex) {
  Case flat = Random(5, 256, 8, 4, 8, 8);
  std::fill(flat.logits.begin(), flat.logits.end(), 0.25f);
  std::fill(flat.bias.begin(), flat.bias.end(), 0.0f);
  ExpectSame(flat);
  Case pairs = Random(64, 72, 3, 2, 8, 9);
  std::mt19937 rng(10);
  for (int64_t t = 0; t < pairs.T; ++t) {
    float* l = &pairs.logits[t * pairs.E];
    for (int i = 0; i < 12; ++i) l[rng() % pairs.E] = l[rng() % pairs.E];
    if (t % 2 == 0) std::copy(l, l + 24, l + 48);  // group 2 equals group 0
  }
  std::fill(pairs.bias.begin(), pairs.bias.end(), 0.0f);
  ExpectSame(pairs);
  Case saturated = Random(17, 64, 8, 3, 8, 12);
  for (size_t i = 0; i < saturated.logits.size(); i += 3) saturated.logits[i] = 40.0f;
  ExpectSame(saturated);
}

// moe_routing.h: NaN ranks as -inf; +-inf logits saturate the sigmoid; an infinite bias can make
// a group's rating NaN (+inf + -inf), which ranks as -inf too.
TEST_F(MoeRoutingCudaTest, NonFiniteInputsAsTheCpuDefines) {
  const float nan = std::numeric_limits<float>::quiet_NaN(), inf = std::numeric_limits<float>::infinity();
  Case c = Random(40, 64, 4, 2, 6, 13);
  for (int64_t t = 0; t < c.T; ++t) {
    float* l = &c.logits[t * c.E];
    switch (t % 5) {
      case 0: l[t % c.E] = nan; break;
      case 1: l[3] = inf; l[20] = -inf; break;
      case 2: std::fill(l, l + 16, nan); break;                    // a whole group NaN
      case 3: std::fill(l, l + c.E, nan); l[40] = 1.0f; break;     // fewer than k finite experts
      default: std::fill(l, l + c.E, -inf); break;                 // every score exactly 0
    }
  }
  ExpectSame(c);
  Case b = Random(20, 64, 4, 2, 6, 14);
  b.bias[5] = inf;
  b.bias[6] = -inf;
  b.bias[17] = nan;
  b.bias[40] = -inf;
  b.bias[41] = -inf;
  ExpectSame(b);
}

TEST(MoeRoutingCudaSupportsTest, NamesTheField) {
  EXPECT_TRUE(MoeRoutingCudaSupports(256, 8, 4, 8).ok());
  EXPECT_NE(MoeRoutingCudaSupports(2048, 8, 4, 8).message().find("n_routed_experts"), std::string::npos);
  EXPECT_NE(MoeRoutingCudaSupports(72, 5, 2, 8).message().find("n_group"), std::string::npos);
  EXPECT_NE(MoeRoutingCudaSupports(72, 3, 4, 8).message().find("topk_group"), std::string::npos);
  EXPECT_NE(MoeRoutingCudaSupports(256, 8, 4, 33).message().find("num_experts_per_tok"), std::string::npos);
}

}  // namespace
}  // namespace indexcache
