// The FP8 latent cache's row format: the CPU reference (CI) and the CUDA kernels against it, byte
// for byte (skip without a CUDA device).
#include <cmath>
#include <cstdint>
#include <cstring>
#include <random>
#include <vector>

#include "core/cuda_check.h"
#include "core/device_buffer.h"
#include "core/dtype.h"
#include "gtest/gtest.h"
#include "kernels/latent_fp8.h"
#include "kernels/latent_fp8_cuda.h"

namespace indexcache {
namespace {

LatentFp8Layout Layout(int64_t nope, int64_t rope) {
  StatusOr<LatentFp8Layout> l = MakeLatentFp8Layout(nope, rope);
  EXPECT_TRUE(l.ok()) << l.status().message();
  return *l;
}

// bf16-representable values over many binades, with an all-zero block and a block of tiny values
// (subnormal after scaling) in every row whose index is a multiple of 3.
std::vector<float> RandomLatents(int64_t n, const LatentFp8Layout& layout, uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::uniform_real_distribution<float> binade(-6.0f, 6.0f);
  std::vector<float> x(n * layout.dim());
  for (int64_t i = 0; i < n; ++i) {
    const float row_scale = std::exp2(binade(rng));
    for (int64_t c = 0; c < layout.dim(); ++c) {
      float v = normal(rng) * row_scale;
      const int64_t block = c / LatentFp8Layout::kBlock;
      if (i % 3 == 0 && c < layout.nope && block == 0) v = 0.0f;
      if (i % 3 == 0 && c < layout.nope && block == 1) v *= (c % 17 == 0) ? 1.0f : 1e-4f;
      x[i * layout.dim() + c] = Bf16ToFloat(FloatToBf16(v));
    }
  }
  return x;
}

TEST(LatentFp8Test, LayoutOfDeepSeekV32) {
  const LatentFp8Layout l = Layout(512, 64);
  EXPECT_EQ(l.dim(), 576);
  EXPECT_EQ(l.blocks(), 4);
  EXPECT_EQ(l.rope_offset(), 528);
  EXPECT_EQ(l.row_bytes(), 656);  // against 1152 bytes of bf16
}

TEST(LatentFp8Test, LayoutRejectsUnsupportedSplits) {
  EXPECT_FALSE(MakeLatentFp8Layout(0, 64).ok());
  EXPECT_FALSE(MakeLatentFp8Layout(96, 32).ok());
  EXPECT_FALSE(MakeLatentFp8Layout(512, 63).ok());
  EXPECT_FALSE(MakeLatentFp8Layout(512, -2).ok());
  EXPECT_NE(MakeLatentFp8Layout(96, 32).status().message().find("kv_lora_rank"), std::string::npos);
}

TEST(LatentFp8Test, ScaleIsTheNextPowerOfTwoOfAmaxOver448AtLeast1e4) {
  EXPECT_EQ(LatentFp8Scale(448.0f), 1.0f);           // exactly a power of two: kept
  EXPECT_EQ(LatentFp8Scale(449.0f), 2.0f);           // just above: the next one
  EXPECT_EQ(LatentFp8Scale(32.0f), 0.125f);
  EXPECT_EQ(LatentFp8Scale(0.0f), 0x1p-13f);         // 1e-4 rounded up to a power of two
  EXPECT_EQ(LatentFp8Scale(448.0f * 1e-4f), 0x1p-13f);
  EXPECT_EQ(LatentFp8Scale(448.0f * 0x1p-13f), 0x1p-13f);
  EXPECT_EQ(LatentFp8Scale(3.0e38f), 0x1p120f);     // the largest bf16 latents still fit
  EXPECT_EQ(LatentFp8Scale(std::nanf("")), 0x1p-13f);
  EXPECT_TRUE(std::isinf(LatentFp8Scale(INFINITY)));
  // Every scale is a power of two, so x / scale and e4m3 * scale are exact.
  std::mt19937 rng(5);
  std::uniform_real_distribution<float> binade(-30.f, 60.f);
  for (int i = 0; i < 10000; ++i) {
    const float amax = std::exp2(binade(rng)), s = LatentFp8Scale(amax);
    int e;
    ASSERT_EQ(std::frexp(s, &e), 0.5f) << amax;
    ASSERT_GE(s, amax / 448.0f) << amax;
    ASSERT_TRUE(s == 0x1p-13f || s / 2 < amax / 448.0f) << amax;
  }
}

TEST(LatentFp8Test, QuantiseStoresScaledE4M3AndBf16Rope) {
  const LatentFp8Layout l = Layout(128, 4);
  std::vector<float> x(l.dim());
  for (int c = 0; c < 128; ++c) x[c] = (c - 64) * 0.5f;  // amax 32 at c = 0
  x[128] = 1.0f, x[129] = -2.5f, x[130] = 3.0f, x[131] = 0.0f;
  std::vector<uint8_t> cache(3 * l.row_bytes(), 0xcd);
  const int32_t row = 2;
  QuantizeLatentRowsCpu(x.data(), &row, 1, l, cache.data());
  const uint8_t* r = cache.data() + 2 * l.row_bytes();
  float scale;
  std::memcpy(&scale, r + l.scale_offset(), 4);
  EXPECT_EQ(scale, 0.125f);  // 32 / 448 = 0.071, rounded up to a power of two
  for (int c = 0; c < 128; ++c) EXPECT_EQ(r[c], FloatToFp8E4M3(x[c] / scale)) << c;
  EXPECT_EQ(r[0], 0xf8);  // -amax / scale = -256: exponent 8 + 7, mantissa 0, sign set
  for (int j = 0; j < 4; ++j) {
    uint16_t h;
    std::memcpy(&h, r + l.rope_offset() + 2 * j, 2);
    EXPECT_EQ(Bf16ToFloat(h), x[128 + j]);
  }
  for (int64_t b = 0; b < 2 * l.row_bytes(); ++b) ASSERT_EQ(cache[b], 0xcd) << "row 0 or 1 touched at byte " << b;
}

TEST(LatentFp8Test, RoundTripErrorIsWithinE4M3Precision) {
  const LatentFp8Layout l = Layout(512, 64);
  const int64_t n = 40;
  const std::vector<float> x = RandomLatents(n, l, 1);
  std::vector<int32_t> rows(n);
  for (int64_t i = 0; i < n; ++i) rows[i] = static_cast<int32_t>((i * 7) % n);  // a permutation
  std::vector<uint8_t> cache(n * l.row_bytes());
  QuantizeLatentRowsCpu(x.data(), rows.data(), n, l, cache.data());
  std::vector<float> y(n * l.dim());
  DequantizeLatentRowsCpu(cache.data(), rows.data(), n, l, y.data());
  for (int64_t i = 0; i < n; ++i) {
    for (int64_t b = 0; b <= l.blocks(); ++b) {
      const int64_t begin = b * 128, end = b < l.blocks() ? begin + 128 : l.dim();
      float amax = 0;
      for (int64_t c = begin; c < end; ++c) amax = std::fmax(amax, std::fabs(x[i * l.dim() + c]));
      for (int64_t c = begin; c < end; ++c) {
        const float want = x[i * l.dim() + c], got = y[i * l.dim() + c];
        if (b == l.blocks()) {
          ASSERT_EQ(got, want) << "rope value changed, row " << i << " col " << c;
        } else {
          // 3 mantissa bits: half an ulp is 2^-4 relative for normals; the subnormal step is
          // 2^-9 of the scale, so half of it bounds the error below 2^-6 (of the scale).
          const float bound = std::fabs(want) / 16 + LatentFp8Scale(amax) / 1024 + 1e-30f;
          ASSERT_LE(std::fabs(got - want), bound * 1.0001f) << i << "," << c;
        }
      }
    }
  }
}

TEST(LatentFp8Test, GatherZeroesPaddingAndCompactIndicesNumberTheGather) {
  const LatentFp8Layout l = Layout(128, 2);
  std::vector<float> x(l.dim(), 3.0f);
  std::vector<uint8_t> cache(l.row_bytes());
  const int32_t row = 0;
  QuantizeLatentRowsCpu(x.data(), &row, 1, l, cache.data());
  const std::vector<int32_t> idx = {0, -1, 0};
  std::vector<float> y(3 * l.dim(), 7.0f);
  DequantizeLatentRowsCpu(cache.data(), idx.data(), 3, l, y.data());
  for (int64_t c = 0; c < l.dim(); ++c) {
    EXPECT_EQ(y[c], 3.0f);
    EXPECT_EQ(y[l.dim() + c], 0.0f);
    EXPECT_EQ(y[2 * l.dim() + c], 3.0f);
  }
  std::vector<int32_t> topk = {5, -1, 9, -1, 0, 2};
  CompactIndicesCpu(2, 3, topk.data());
  EXPECT_EQ(topk, (std::vector<int32_t>{0, -1, 2, -1, 4, 5}));
}

TEST(LatentFp8Test, CudaEqualsCpuBitForBit) {
  if (!CudaDeviceAvailable()) GTEST_SKIP() << "no CUDA device";
  std::mt19937 rng(9);
  // 512 + 64 and 1024 + 64 take the 16-byte gather (row and rope offsets multiples of 16 bytes; 1024:
  // two words per lane), the others the 4-byte one.
  for (const auto& split :
       std::vector<std::pair<int64_t, int64_t>>{{512, 64}, {1024, 64}, {128, 32}, {256, 2}, {384, 0}}) {
    const LatentFp8Layout l = Layout(split.first, split.second);
    const int64_t n = 333, pool = 1000;
    const std::vector<float> x = RandomLatents(n, l, 11);
    std::vector<uint16_t> x_bf16(x.size());
    for (size_t i = 0; i < x.size(); ++i) x_bf16[i] = FloatToBf16(x[i]);
    std::vector<int32_t> perm(pool);
    for (int64_t i = 0; i < pool; ++i) perm[i] = static_cast<int32_t>(i);
    std::shuffle(perm.begin(), perm.end(), rng);
    const std::vector<int32_t> rows(perm.begin(), perm.begin() + n);
    std::vector<uint8_t> cache(pool * l.row_bytes(), 0x5a);
    DeviceBuffer<uint8_t> d_cache(cache.size());
    d_cache.CopyFrom(cache);
    QuantizeLatentRowsCpu(x.data(), rows.data(), n, l, cache.data());
    DeviceBuffer<uint16_t> d_x(x_bf16.size());
    DeviceBuffer<int32_t> d_rows(rows.size());
    d_x.CopyFrom(x_bf16);
    d_rows.CopyFrom(rows);
    QuantizeLatentRowsCuda(reinterpret_cast<const __nv_bfloat16*>(d_x.ptr), d_rows.ptr, n, l, d_cache.ptr, nullptr);
    ASSERT_EQ(d_cache.ToHost(), cache) << l.nope << "+" << l.rope;

    // Gather: quantised rows, untouched (0x5a) rows and padding, in a random order.
    std::vector<int32_t> idx(777);
    std::uniform_int_distribution<int32_t> pick(-1, static_cast<int32_t>(pool - 1));
    for (auto& v : idx) v = pick(rng) % 5 == 0 ? -1 : rows[pick(rng) % n];
    idx[3] = perm[n];  // a row nobody wrote: 0x5a bytes decode to finite numbers too
    std::vector<float> want(idx.size() * l.dim());
    DequantizeLatentRowsCpu(cache.data(), idx.data(), static_cast<int64_t>(idx.size()), l, want.data());
    DeviceBuffer<int32_t> d_idx(idx.size());
    d_idx.CopyFrom(idx);
    DeviceBuffer<uint16_t> d_out(want.size());
    DequantizeLatentRowsCuda(d_cache.ptr, d_idx.ptr, static_cast<int64_t>(idx.size()), l,
                             reinterpret_cast<__nv_bfloat16*>(d_out.ptr), nullptr);
    const std::vector<uint16_t> got = d_out.ToHost();
    for (size_t i = 0; i < want.size(); ++i) ASSERT_EQ(got[i], FloatToBf16(want[i])) << i;

    std::vector<int32_t> compact = idx;
    CompactIndicesCpu(37, 21, compact.data());
    CompactIndicesCuda(37, 21, d_idx.ptr, nullptr);
    ASSERT_EQ(d_idx.ToHost(), compact);
  }
}

}  // namespace
}  // namespace indexcache
