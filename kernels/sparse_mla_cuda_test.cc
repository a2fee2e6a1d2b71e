// SparseMlaCuda, both kernels (SparseMlaVariant), against SparseMlaCpu on fresh random inputs
// rounded to bf16 (the reference runs on the same rounded values). Shapes: odd sizes with -1,
// out-of-range and duplicate indices and a query with no valid key; a partial 64-head group (H = 16,
// H = 80); the model's top-k of 2048 at H = 128; an odd number of 64-key blocks with a sharp softmax
// at H = 128. d_qk = 576, d_v = 512 throughout (the only sizes the kernels support). Skips without a
// CUDA device (CI has none).
#include "kernels/sparse_mla_cuda.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "core/cuda_check.h"
#include "core/device_buffer.h"
#include "core/dtype.h"
#include "core/test_util.h"
#include "gtest/gtest.h"
#include "kernels/sparse_mla.h"
#include "kernels/tolerances.h"

namespace indexcache {
namespace {

constexpr int64_t kDqk = 576, kDv = 512;

// Device buffer of n elements of T, freed on scope exit.
struct Case {
  const char* name;
  int64_t T, H, L, topk;
  bool holes;       // some -1, out-of-range and duplicate indices
  int64_t empty_t;  // this query gets only -1 / out-of-range indices (-1: none)
  float scale = 0.0721687836f;  // 1/sqrt(192), DeepSeek's; 0.25 makes logits spread ~6 (sharp)
};

struct Result {
  std::vector<float> out, ref_out, lse, ref_lse;
};

// Random q, kv ~ N(0, 1) rounded to bf16. With scale 1/sqrt(192) (DeepSeek's head dim) logits have a
// spread of ~1.7 and the softmax is neither flat nor one-hot; with 0.25 (~6) the running max keeps
// jumping, which exercises the kernel's rescaling of partial outputs.
Result RunCase(const Case& c, uint32_t seed, SparseMlaVariant variant) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> normal(0.f, 1.f);
  std::vector<uint16_t> qb(c.T * c.H * kDqk), kvb(c.L * kDqk);
  std::vector<float> q(qb.size()), kv(kvb.size());
  for (size_t i = 0; i < q.size(); ++i) q[i] = Bf16ToFloat(qb[i] = FloatToBf16(normal(rng)));
  for (size_t i = 0; i < kv.size(); ++i) kv[i] = Bf16ToFloat(kvb[i] = FloatToBf16(normal(rng)));
  std::vector<int32_t> idx(c.T * c.topk);
  std::uniform_int_distribution<int32_t> key(0, static_cast<int32_t>(c.L - 1));
  std::uniform_int_distribution<int> pick(0, 9);
  for (int64_t t = 0; t < c.T; ++t) {
    for (int64_t j = 0; j < c.topk; ++j) {
      int32_t v = key(rng);
      if (c.holes) {
        const int r = pick(rng);
        if (r == 0) v = -1;                                       // skipped
        if (r == 1) v = static_cast<int32_t>(c.L + (j % 3));      // out of range: skipped
        if (r == 2 && j > 0) v = idx[t * c.topk + j - 1] >= 0 ? idx[t * c.topk + j - 1] : v;  // duplicate
      }
      if (t == c.empty_t) v = (j % 2) ? -1 : static_cast<int32_t>(c.L);
      idx[t * c.topk + j] = v;
    }
  }
  const float scale = c.scale;

  Result r;
  r.ref_out.resize(c.T * c.H * kDv);
  r.ref_lse.resize(c.T * c.H);
  SparseMlaParams cp;
  cp.q = q.data();
  cp.kv = kv.data();
  cp.indices = idx.data();
  cp.T = c.T;
  cp.H = c.H;
  cp.d_qk = kDqk;
  cp.d_v = kDv;
  cp.L = c.L;
  cp.topk = c.topk;
  cp.scale = scale;
  cp.out = r.ref_out.data();
  cp.lse = r.ref_lse.data();
  SparseMlaCpu(cp);

  static_assert(sizeof(__nv_bfloat16) == sizeof(uint16_t), "bf16 is its 16 bits");
  DeviceBuffer<__nv_bfloat16> dq(qb.size()), dkv(kvb.size()), dout(r.ref_out.size());
  DeviceBuffer<int32_t> didx(idx.size());
  DeviceBuffer<float> dlse(r.ref_lse.size());
  dq.CopyFrom(qb.data());
  dkv.CopyFrom(kvb.data());
  didx.CopyFrom(idx.data());
  // Poison: 0xFFFF is a bf16 NaN and 0xFFFFFFFF an fp32 NaN, so an unwritten element fails.
  CUDA_CHECK(cudaMemset(dout.ptr, 0xFF, dout.bytes));
  CUDA_CHECK(cudaMemset(dlse.ptr, 0xFF, dlse.bytes));

  SparseMlaCudaParams p;
  p.q = dq.ptr;
  p.kv = dkv.ptr;
  p.indices = didx.ptr;
  p.T = c.T;
  p.H = c.H;
  p.d_qk = kDqk;
  p.d_v = kDv;
  p.L = c.L;
  p.topk = c.topk;
  p.scale = scale;
  p.out = dout.ptr;
  p.lse = dlse.ptr;
  p.variant = variant;
  SparseMlaCuda(p, nullptr);
  CUDA_CHECK(cudaDeviceSynchronize());

  std::vector<uint16_t> outb(r.ref_out.size());
  dout.CopyTo(outb.data());
  r.out.resize(outb.size());
  for (size_t i = 0; i < outb.size(); ++i) r.out[i] = Bf16ToFloat(outb[i]);
  r.lse.resize(r.ref_lse.size());
  dlse.CopyTo(r.lse.data());
  return r;
}

class SparseMlaCudaTest : public ::testing::TestWithParam<Case> {};

TEST_P(SparseMlaCudaTest, MatchesCpuOnRoundedInputs) {
  if (!CudaDeviceAvailable()) GTEST_SKIP() << "no CUDA device";
  const Case c = GetParam();
  // Both kernels on the same inputs (the same seed) against the same reference.
  for (const SparseMlaVariant variant : {SparseMlaVariant::kTwoWarpgroups, SparseMlaVariant::kWarpSpecialized}) {
    SCOPED_TRACE(variant == SparseMlaVariant::kTwoWarpgroups ? "kTwoWarpgroups" : "kWarpSpecialized");
    const Result r = RunCase(c, 7000 + static_cast<uint32_t>(c.T * 131 + c.H * 17 + c.L + c.topk), variant);

    for (float v : r.out) ASSERT_TRUE(std::isfinite(v)) << "unwritten or non-finite output";
    EXPECT_LE(RelL2(r.out, r.ref_out), kRelL2TolBf16);
    double max_lse_err = 0.0;
    for (size_t i = 0; i < r.lse.size(); ++i) {
      if (std::isinf(r.ref_lse[i])) {
        EXPECT_TRUE(std::isinf(r.lse[i]) && r.lse[i] > 0) << "lse[" << i << "] = " << r.lse[i];
      } else {
        max_lse_err = std::max(max_lse_err, std::fabs(static_cast<double>(r.lse[i]) - r.ref_lse[i]));
      }
    }
    EXPECT_LE(max_lse_err, 1e-3);

    if (c.empty_t >= 0) {
      for (int64_t h = 0; h < c.H; ++h) {
        EXPECT_EQ(r.lse[c.empty_t * c.H + h], std::numeric_limits<float>::infinity());
        for (int64_t d = 0; d < kDv; ++d) ASSERT_EQ(r.out[(c.empty_t * c.H + h) * kDv + d], 0.f);
      }
    }
  }
}

INSTANTIATE_TEST_SUITE_P(
    Shapes, SparseMlaCudaTest,
    ::testing::Values(Case{"odd_h16", 17, 16, 281, 33, true, 3},    // partial chunk and head group
                      Case{"odd_h80", 7, 80, 1000, 200, true, 6},   // two head groups, second partial
                      Case{"odd_h64", 4, 64, 97, 130, true, -1},    // L < topk: many duplicates
                      Case{"topk2048_h128", 5, 128, 4099, 2048, false, -1},
                      Case{"topk2048_h128_holes", 3, 128, 4099, 2048, true, 1},
                      Case{"topk2048_h64_sharp", 3, 64, 5000, 2048, true, -1, 0.25f},
                      Case{"odd_h16_sharp", 9, 16, 300, 333, true, 2, 0.25f},
                      Case{"odd_h128_sharp", 6, 128, 2000, 1000, true, 4, 0.25f}),  // odd pair count
    [](const ::testing::TestParamInfo<Case>& info) { return std::string(info.param.name); });

}  // namespace
}  // namespace indexcache
