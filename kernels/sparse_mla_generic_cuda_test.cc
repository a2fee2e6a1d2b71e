// SparseMlaGenericCuda (kernels/sparse_mla_generic_cuda.h, any head sizes) against SparseMlaCpu
// (kernels/sparse_mla.h) on fresh random inputs rounded to bf16 (the reference runs on the same
// rounded values). Shapes: head dims other than 576 / 512 (tiny, odd, not multiples of 8, d_v <
// d_qk), -1 and out-of-range indices, duplicate indices (the reference counts each once per
// occurrence), L < topk (mostly duplicates), a query with no valid key (out = 0, lse = +inf), one
// head and many, sharp and flat softmaxes, the kernel's largest topk (8192). Skips without a CUDA
// device (CI has none).
#include "kernels/sparse_mla_generic_cuda.h"

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

struct Case {
  const char* name;
  int64_t T, H, d_qk, d_v, L, topk;
  bool holes;       // some -1, out-of-range and duplicate indices
  int64_t empty_t;  // this query gets only -1 / out-of-range indices (-1: none)
  float scale = 0.125f;  // logits spread ~ scale * sqrt(d_qk); 0.5 with small d_qk is sharp
};

struct Result {
  std::vector<float> out, ref_out, lse, ref_lse;
};

Result RunCase(const Case& c, uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> normal(0.f, 1.f);
  std::vector<uint16_t> qb(c.T * c.H * c.d_qk), kvb(c.L * c.d_qk);
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
        if (r == 0) v = -1;                                   // padding: skipped
        if (r == 1) v = static_cast<int32_t>(c.L + (j % 3));  // out of range: skipped
        if (r == 2 && j > 0 && idx[t * c.topk + j - 1] >= 0) v = idx[t * c.topk + j - 1];  // duplicate
      }
      if (t == c.empty_t) v = (j % 2) ? -1 : static_cast<int32_t>(c.L);
      idx[t * c.topk + j] = v;
    }
  }

  Result r;
  r.ref_out.resize(c.T * c.H * c.d_v);
  r.ref_lse.resize(c.T * c.H);
  SparseMlaParams cp;
  cp.q = q.data();
  cp.kv = kv.data();
  cp.indices = idx.data();
  cp.T = c.T;
  cp.H = c.H;
  cp.d_qk = c.d_qk;
  cp.d_v = c.d_v;
  cp.L = c.L;
  cp.topk = c.topk;
  cp.scale = c.scale;
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
  p.d_qk = c.d_qk;
  p.d_v = c.d_v;
  p.L = c.L;
  p.topk = c.topk;
  p.scale = c.scale;
  p.out = dout.ptr;
  p.lse = dlse.ptr;
  SparseMlaGenericCuda(p, nullptr);
  CUDA_CHECK(cudaDeviceSynchronize());

  std::vector<uint16_t> outb(r.ref_out.size());
  dout.CopyTo(outb.data());
  r.out.resize(outb.size());
  for (size_t i = 0; i < outb.size(); ++i) r.out[i] = Bf16ToFloat(outb[i]);
  r.lse.resize(r.ref_lse.size());
  dlse.CopyTo(r.lse.data());
  return r;
}

class SparseMlaGenericCudaTest : public ::testing::TestWithParam<Case> {};

TEST_P(SparseMlaGenericCudaTest, MatchesCpuOnRoundedInputs) {
  if (!CudaDeviceAvailable()) GTEST_SKIP() << "no CUDA device";
  const Case c = GetParam();
  ASSERT_TRUE(SparseMlaCudaSupports(c.d_qk, c.d_v, c.topk).ok());
  const Result r = RunCase(c, 9000 + static_cast<uint32_t>(c.T * 131 + c.H * 17 + c.L + c.topk + c.d_qk));

  for (float v : r.out) ASSERT_TRUE(std::isfinite(v)) << "unwritten or non-finite output";
  EXPECT_LE(RelL2(r.out, r.ref_out), kRelL2TolBf16);
  // lse is fp32 in the kernel: compared over the queries that have a valid key; +inf elsewhere.
  std::vector<float> lse, ref_lse;
  for (size_t i = 0; i < r.lse.size(); ++i) {
    if (std::isinf(r.ref_lse[i])) {
      EXPECT_TRUE(std::isinf(r.lse[i]) && r.lse[i] > 0) << "lse[" << i << "] = " << r.lse[i];
    } else {
      lse.push_back(r.lse[i]);
      ref_lse.push_back(r.ref_lse[i]);
    }
  }
  if (!lse.empty()) EXPECT_LE(RelL2(lse, ref_lse), kRelL2TolF32);

  if (c.empty_t >= 0) {
    for (int64_t h = 0; h < c.H; ++h) {
      EXPECT_EQ(r.lse[c.empty_t * c.H + h], std::numeric_limits<float>::infinity());
      for (int64_t d = 0; d < c.d_v; ++d) ASSERT_EQ(r.out[(c.empty_t * c.H + h) * c.d_v + d], 0.f);
    }
  }
}

// Duplicates count once per occurrence: a row of k copies of one key and one other key weights the
// copied key k times (softmax over k + 1 entries), exactly as the reference does.
TEST(SparseMlaGenericCudaTest, DuplicatesCountPerOccurrence) {
  const Case c{"dups", 1, 2, 24, 16, 3, 6, false, -1, 0.5f};
  std::mt19937 rng(5);
  std::normal_distribution<float> normal(0.f, 1.f);
  std::vector<uint16_t> qb(c.T * c.H * c.d_qk), kvb(c.L * c.d_qk);
  std::vector<float> q(qb.size()), kv(kvb.size());
  for (size_t i = 0; i < q.size(); ++i) q[i] = Bf16ToFloat(qb[i] = FloatToBf16(normal(rng)));
  for (size_t i = 0; i < kv.size(); ++i) kv[i] = Bf16ToFloat(kvb[i] = FloatToBf16(normal(rng)));
  const std::vector<int32_t> idx = {2, 2, -1, 2, 0, 2};  // key 2 four times, key 0 once
  std::vector<float> ref_out(c.H * c.d_v), ref_lse(c.H);
  SparseMlaParams cp;
  cp.q = q.data();
  cp.kv = kv.data();
  cp.indices = idx.data();
  cp.T = c.T;
  cp.H = c.H;
  cp.d_qk = c.d_qk;
  cp.d_v = c.d_v;
  cp.L = c.L;
  cp.topk = c.topk;
  cp.scale = c.scale;
  cp.out = ref_out.data();
  cp.lse = ref_lse.data();
  SparseMlaCpu(cp);
  // The reference itself (runs without a GPU too): lse = log(4 e^{s2} + e^{s0}).
  for (int64_t h = 0; h < c.H; ++h) {
    double s0 = 0, s2 = 0;
    for (int64_t d = 0; d < c.d_qk; ++d) {
      s0 += double(q[h * c.d_qk + d]) * kv[0 * c.d_qk + d];
      s2 += double(q[h * c.d_qk + d]) * kv[2 * c.d_qk + d];
    }
    EXPECT_NEAR(ref_lse[h], std::log(4 * std::exp(s2 * c.scale) + std::exp(s0 * c.scale)), 1e-4);
  }
  if (!CudaDeviceAvailable()) GTEST_SKIP() << "no CUDA device (the reference part above ran)";

  DeviceBuffer<__nv_bfloat16> dq(qb.size()), dkv(kvb.size()), dout(ref_out.size());
  DeviceBuffer<int32_t> didx(idx.size());
  DeviceBuffer<float> dlse(ref_lse.size());
  dq.CopyFrom(qb.data());
  dkv.CopyFrom(kvb.data());
  didx.CopyFrom(idx.data());
  SparseMlaCudaParams p;
  p.q = dq.ptr;
  p.kv = dkv.ptr;
  p.indices = didx.ptr;
  p.T = c.T;
  p.H = c.H;
  p.d_qk = c.d_qk;
  p.d_v = c.d_v;
  p.L = c.L;
  p.topk = c.topk;
  p.scale = c.scale;
  p.out = dout.ptr;
  p.lse = dlse.ptr;
  SparseMlaGenericCuda(p, nullptr);
  CUDA_CHECK(cudaDeviceSynchronize());
  std::vector<uint16_t> outb(ref_out.size());
  dout.CopyTo(outb.data());
  std::vector<float> out(outb.size()), lse(ref_lse.size());
  for (size_t i = 0; i < outb.size(); ++i) out[i] = Bf16ToFloat(outb[i]);
  dlse.CopyTo(lse.data());
  EXPECT_LE(RelL2(out, ref_out), kRelL2TolBf16);
  EXPECT_LE(RelL2(lse, ref_lse), kRelL2TolF32);
}

INSTANTIATE_TEST_SUITE_P(
    Shapes, SparseMlaGenericCudaTest,
    ::testing::Values(Case{"d64_v48", 17, 3, 64, 48, 281, 33, true, 3},
                      Case{"d200_v128_L_lt_topk", 5, 7, 200, 128, 97, 130, true, -1},  // many duplicates
                      Case{"d8_v8_sharp", 9, 1, 8, 8, 5, 17, true, 0, 0.5f},          // L = 5 < topk = 17
                      Case{"d37_v19_odd", 4, 5, 37, 19, 50, 64, true, 2},             // not multiples of 8
                      Case{"d192_v128_topk2048", 3, 16, 192, 128, 4099, 2048, true, 1},
                      Case{"d576_v512_h1", 6, 1, 576, 512, 700, 300, true, -1},
                      Case{"d96_v64_topk8192", 1, 2, 96, 64, 9000, 8192, true, -1},   // the largest topk
                      Case{"d130_v1_no_holes", 11, 9, 130, 1, 40, 39, false, -1}),
    [](const ::testing::TestParamInfo<Case>& info) { return std::string(info.param.name); });

}  // namespace
}  // namespace indexcache
