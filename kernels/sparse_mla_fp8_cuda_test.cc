// SparseMlaCuda reading an FP8 latent cache in place (SparseMlaCudaParams::kv_fp8), on fresh random
// latents quantised by the CPU reference (kernels/latent_fp8.h). Two checks per shape:
//   - bit for bit against the unfused path that the runtime ran before: DequantizeLatentRowsCuda of
//     the selected rows, CompactIndicesCuda, then SparseMlaCuda (warp-specialised) on the gathered
//     bf16 rows. The consumers are the same code, so any difference is the loader's: a wrong scale,
//     swizzle, byte order, row or half;
//   - against SparseMlaCpu on the CPU-dequantised cache (the semantics), within the bf16 tolerance.
// Shapes: odd sizes with -1, out-of-range and duplicate indices and a query with no valid key;
// partial head groups (H = 16, 80); the model's top-k of 2048 at H = 128; a sharp softmax; an odd
// number of 64-key blocks; latents with per-block magnitudes from 1e-3 to 3 (the scales matter).
// Skips without a CUDA device (CI has none).
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "core/cuda_check.h"
#include "core/device_buffer.h"
#include "core/dtype.h"
#include "core/test_util.h"
#include "gtest/gtest.h"
#include "kernels/latent_fp8.h"
#include "kernels/latent_fp8_cuda.h"
#include "kernels/sparse_mla.h"
#include "kernels/sparse_mla_cuda.h"
#include "kernels/sparse_mla_cuda_internal.h"
#include "kernels/tolerances.h"

namespace indexcache {
namespace {

constexpr int64_t kDqk = 576, kDv = 512;

struct Case {
  const char* name;
  int64_t T, H, L, topk;
  bool holes;       // some -1, out-of-range and duplicate indices
  int64_t empty_t;  // this query gets only -1 / out-of-range indices (-1: none)
  float scale = 0.0721687836f;
  // Scales the quantiser never writes: some not powers of two, some 2^9 (above the fast path's
  // 2^7), so the loader's general dequantisation runs. Checked against the unfused path only (2^9
  // makes logits too large for the CPU comparison's absolute LSE bound).
  bool odd_scales = false;
};

TEST(SparseMlaFp8CudaTest, LayoutIsTheKernels) {
  // The kernel hard-codes V3.2's row: 512 e4m3, 4 scales, 64 bf16 = 656 bytes.
  const LatentFp8Layout layout = MakeLatentFp8Layout(512, 64).value();
  EXPECT_EQ(layout.row_bytes(), 656);
  EXPECT_EQ(layout.scale_offset(), 512);
  EXPECT_EQ(layout.rope_offset(), 528);
}

class SparseMlaFp8CudaTest : public ::testing::TestWithParam<Case> {};

TEST_P(SparseMlaFp8CudaTest, EqualsDequantiseThenAttendAndMatchesCpu) {
  if (!CudaDeviceAvailable()) GTEST_SKIP() << "no CUDA device";
  const Case c = GetParam();
  const LatentFp8Layout layout = MakeLatentFp8Layout(512, 64).value();
  std::mt19937 rng(static_cast<uint32_t>(9100 + c.T * 131 + c.H * 17 + c.L + c.topk));
  std::normal_distribution<float> normal(0.f, 1.f);
  std::uniform_real_distribution<float> log_mag(-3.f, 0.5f);

  // Latents: bf16 values, each 128-value block of a row with its own magnitude.
  std::vector<float> latents(c.L * kDqk);
  for (int64_t r = 0; r < c.L; ++r) {
    for (int64_t b = 0; b < kDqk; b += 64) {
      const float mag = b < 512 ? std::pow(10.f, log_mag(rng)) : 1.f;
      for (int64_t j = b; j < b + 64; ++j) latents[r * kDqk + j] = Bf16ToFloat(FloatToBf16(mag * normal(rng)));
    }
  }
  std::vector<int32_t> all_rows(c.L);
  for (int64_t r = 0; r < c.L; ++r) all_rows[r] = static_cast<int32_t>(r);
  std::vector<uint8_t> cache(c.L * layout.row_bytes());
  QuantizeLatentRowsCpu(latents.data(), all_rows.data(), c.L, layout, cache.data());
  if (c.odd_scales) {
    for (int64_t r = 0; r < c.L; ++r) {
      for (int64_t b = 0; b < 4; ++b) {
        float sc;
        uint8_t* at = cache.data() + r * layout.row_bytes() + layout.scale_offset() + 4 * b;
        std::memcpy(&sc, at, 4);
        if (r % 5 == 0) sc *= 1.37f;
        if (r % 7 == 0 && b == 3) sc = 512.f;
        std::memcpy(at, &sc, 4);
      }
    }
  }
  // What the cache holds, as the CPU reads it, rounded to bf16 as the CUDA paths (both) attend over it.
  std::vector<float> dequant(c.L * kDqk);
  DequantizeLatentRowsCpu(cache.data(), all_rows.data(), c.L, layout, dequant.data());
  for (float& v : dequant) v = Bf16ToFloat(FloatToBf16(v));

  std::vector<uint16_t> qb(c.T * c.H * kDqk);
  std::vector<float> q(qb.size());
  for (size_t i = 0; i < q.size(); ++i) q[i] = Bf16ToFloat(qb[i] = FloatToBf16(normal(rng)));
  std::vector<int32_t> idx(c.T * c.topk);
  std::uniform_int_distribution<int32_t> key(0, static_cast<int32_t>(c.L - 1));
  std::uniform_int_distribution<int> pick(0, 9);
  for (int64_t t = 0; t < c.T; ++t) {
    for (int64_t j = 0; j < c.topk; ++j) {
      int32_t v = key(rng);
      if (c.holes) {
        const int r = pick(rng);
        if (r == 0) v = -1;
        if (r == 1) v = static_cast<int32_t>(c.L + (j % 3));
        if (r == 2 && j > 0) v = idx[t * c.topk + j - 1] >= 0 ? idx[t * c.topk + j - 1] : v;
      }
      if (t == c.empty_t) v = (j % 2) ? -1 : static_cast<int32_t>(c.L);
      idx[t * c.topk + j] = v;
    }
  }

  // The reference.
  std::vector<float> ref_out(c.T * c.H * kDv), ref_lse(c.T * c.H);
  SparseMlaParams cp;
  cp.q = q.data();
  cp.kv = dequant.data();
  cp.indices = idx.data();
  cp.T = c.T;
  cp.H = c.H;
  cp.d_qk = kDqk;
  cp.d_v = kDv;
  cp.L = c.L;
  cp.topk = c.topk;
  cp.scale = c.scale;
  cp.out = ref_out.data();
  cp.lse = ref_lse.data();
  SparseMlaCpu(cp);

  DeviceBuffer<__nv_bfloat16> dq(qb.size()), dout(ref_out.size()), dout_unfused(ref_out.size());
  DeviceBuffer<uint8_t> dcache(cache.size());
  DeviceBuffer<int32_t> didx(idx.size());
  DeviceBuffer<float> dlse(ref_lse.size()), dlse_unfused(ref_lse.size());
  dq.CopyFrom(qb.data());
  dcache.CopyFrom(cache.data());
  didx.CopyFrom(idx.data());
  for (const auto* b : {&dout, &dout_unfused}) CUDA_CHECK(cudaMemset(b->ptr, 0xFF, b->bytes));  // NaN poison
  for (const auto* b : {&dlse, &dlse_unfused}) CUDA_CHECK(cudaMemset(b->ptr, 0xFF, b->bytes));

  SparseMlaCudaParams p;
  p.q = dq.ptr;
  p.kv_fp8 = dcache.ptr;
  p.indices = didx.ptr;
  p.T = c.T;
  p.H = c.H;
  p.L = c.L;
  p.topk = c.topk;
  p.scale = c.scale;
  p.out = dout.ptr;
  p.lse = dlse.ptr;
  // The experiment loader (polling) into a second buffer, the default into dout.
  DeviceBuffer<__nv_bfloat16> dout_polling(ref_out.size());
  {
    sparse_mla::WsExperiment e;
    e.fp8_polling = true;
    sparse_mla::SetWsExperiment(e);
    SparseMlaCudaParams io = p;
    io.out = dout_polling.ptr;
    io.lse = nullptr;
    SparseMlaCuda(io, nullptr);
    sparse_mla::SetWsExperiment({});
  }
  SparseMlaCuda(p, nullptr);

  // Unfused: gather the selected rows (out-of-range entries made -1 first: the gather reads any
  // index >= 0), compact the indices, attend over the gathered rows.
  std::vector<int32_t> idx_in_range(idx);
  for (int32_t& v : idx_in_range) v = v >= c.L ? -1 : v;
  DeviceBuffer<int32_t> dcompact(idx.size());
  dcompact.CopyFrom(idx_in_range.data());
  DeviceBuffer<__nv_bfloat16> dgathered(idx.size() * kDqk);
  DequantizeLatentRowsCuda(dcache.ptr, dcompact.ptr, static_cast<int64_t>(idx.size()), layout, dgathered.ptr, nullptr);
  CompactIndicesCuda(c.T, c.topk, dcompact.ptr, nullptr);
  SparseMlaCudaParams u = p;
  u.kv_fp8 = nullptr;
  u.kv = dgathered.ptr;
  u.indices = dcompact.ptr;
  u.L = c.T * c.topk;
  u.out = dout_unfused.ptr;
  u.lse = dlse_unfused.ptr;
  SparseMlaCuda(u, nullptr);
  CUDA_CHECK(cudaDeviceSynchronize());

  std::vector<uint16_t> outb(ref_out.size()), outb_unfused(ref_out.size());
  std::vector<float> lse(ref_lse.size()), lse_unfused(ref_lse.size());
  dout.CopyTo(outb.data());
  dout_unfused.CopyTo(outb_unfused.data());
  dlse.CopyTo(lse.data());
  dlse_unfused.CopyTo(lse_unfused.data());

  std::vector<uint16_t> outb_polling(ref_out.size());
  dout_polling.CopyTo(outb_polling.data());
  size_t out_diff = 0, lse_diff = 0, polling_diff = 0;
  for (size_t i = 0; i < outb.size(); ++i) out_diff += outb[i] != outb_unfused[i];
  for (size_t i = 0; i < outb.size(); ++i) polling_diff += outb_polling[i] != outb_unfused[i];
  EXPECT_EQ(polling_diff, 0u) << "polling loader outputs that differ, of " << outb.size();
  for (size_t i = 0; i < lse.size(); ++i) lse_diff += std::memcmp(&lse[i], &lse_unfused[i], sizeof(float)) != 0;
  EXPECT_EQ(out_diff, 0u) << "outputs that differ from dequantise-then-attend, of " << outb.size();
  EXPECT_EQ(lse_diff, 0u) << "LSEs that differ from dequantise-then-attend, of " << lse.size();

  std::vector<float> out(outb.size());
  for (size_t i = 0; i < outb.size(); ++i) out[i] = Bf16ToFloat(outb[i]);
  for (float v : out) ASSERT_TRUE(std::isfinite(v)) << "unwritten or non-finite output";
  if (c.odd_scales) return;
  EXPECT_LE(RelL2(out, ref_out), kRelL2TolBf16);
  double max_lse_err = 0.0;
  for (size_t i = 0; i < lse.size(); ++i) {
    if (std::isinf(ref_lse[i])) {
      EXPECT_TRUE(std::isinf(lse[i]) && lse[i] > 0) << "lse[" << i << "] = " << lse[i];
    } else {
      max_lse_err = std::max(max_lse_err, std::fabs(static_cast<double>(lse[i]) - ref_lse[i]));
    }
  }
  EXPECT_LE(max_lse_err, 1e-3);
  if (c.empty_t >= 0) {
    for (int64_t h = 0; h < c.H; ++h) {
      EXPECT_EQ(lse[c.empty_t * c.H + h], std::numeric_limits<float>::infinity());
      for (int64_t d = 0; d < kDv; ++d) ASSERT_EQ(out[(c.empty_t * c.H + h) * kDv + d], 0.f);
    }
  }
}

INSTANTIATE_TEST_SUITE_P(
    Shapes, SparseMlaFp8CudaTest,
    ::testing::Values(Case{"odd_h16", 17, 16, 281, 33, true, 3},  // partial block and head group
                      Case{"odd_h80", 7, 80, 1000, 200, true, 6},
                      Case{"odd_h64_dups", 4, 64, 97, 130, true, -1},  // L < topk: many duplicates
                      Case{"topk2048_h128", 5, 128, 4099, 2048, false, -1},
                      Case{"topk2048_h128_holes", 3, 128, 4099, 2048, true, 1},
                      Case{"odd_h128_sharp", 6, 128, 2000, 1000, true, 4, 0.25f},  // odd pair count
                      Case{"decode_like_h128", 64, 128, 3000, 2048, true, -1},      // many CTAs in flight
                      Case{"odd_scales_h128", 9, 128, 3000, 1000, true, 2, 0.0721687836f, true}),
    [](const ::testing::TestParamInfo<Case>& info) { return std::string(info.param.name); });

}  // namespace
}  // namespace indexcache
