// Fp8E4M3Rne against the search-based FloatToFp8E4M3 (core/dtype.h) on every code, the midpoints
// between neighbouring codes (ties to even) and a spread of random values, and Fp8QuantRowsCpu's
// scales and round trip (each value within half a code step of the dequantised one).
#include "kernels/fp8_quant.h"

#include <cmath>
#include <cstdint>
#include <random>
#include <vector>

#include "core/dtype.h"
#include "gtest/gtest.h"
#include "kernels/fp8_dequant.h"

namespace indexcache {
namespace {

TEST(Fp8E4M3Rne, MatchesSearchOnCodesMidpointsAndRandomValues) {
  std::vector<float> values = {0.f, -0.f, 448.f, -448.f, 449.f, 464.f, 500.f, 1e30f, -1e30f, 1e-30f,
                               0.015625f, 0.0156249f, 0.001953125f, 0.0009765625f, 0.00097656f};
  for (int c = 0; c < 256; ++c) {
    if ((c & 0x7f) == 0x7f) continue;  // NaN
    const float v = Fp8E4M3ToFloat(static_cast<uint8_t>(c));
    values.push_back(v);
    values.push_back(std::nextafter(v, 1e9f));
    values.push_back(std::nextafter(v, -1e9f));
    if ((c & 0x7f) < 0x7e) {
      const float next = Fp8E4M3ToFloat(static_cast<uint8_t>(c + 1));
      const float mid = 0.5f * (v + next);  // exact: both have few mantissa bits
      values.push_back(mid);
      values.push_back(std::nextafter(mid, 1e9f));
      values.push_back(std::nextafter(mid, -1e9f));
    }
  }
  std::mt19937 rng(5);
  std::uniform_real_distribution<float> expo(-14.f, 10.f), sign(-1.f, 1.f);
  for (int i = 0; i < 20000; ++i) values.push_back(std::copysign(std::exp2(expo(rng)), sign(rng)));
  for (const float v : values) {
    EXPECT_EQ(Fp8E4M3Rne(v), FloatToFp8E4M3(v)) << "value " << v;
  }
  EXPECT_EQ(Fp8E4M3Rne(std::nanf("")), 0x7f);
}

TEST(Fp8QuantRowsCpu, ScalesAndRoundTrip) {
  const int64_t rows = 37, cols = 130;
  std::mt19937 rng(9);
  std::normal_distribution<float> normal(0.f, 1.f);
  std::vector<float> x(rows * cols);
  for (int64_t r = 0; r < rows; ++r) {
    const float mag = std::exp2(static_cast<float>(r % 11) - 5.f);  // rows of very different size
    for (int64_t c = 0; c < cols; ++c) x[r * cols + c] = r == 3 ? 0.f : mag * normal(rng);
  }
  std::vector<uint8_t> q(x.size());
  std::vector<float> scale(rows), back(x.size());
  Fp8QuantRowsCpu(x.data(), rows, cols, q.data(), scale.data());
  Fp8BlockLayout layout;
  layout.rows = rows;
  layout.cols = cols;
  layout.block_rows = 1;
  layout.block_cols = cols;
  Fp8DequantCpu(q.data(), scale.data(), layout, back.data());
  for (int64_t r = 0; r < rows; ++r) {
    float amax = 0.f;
    for (int64_t c = 0; c < cols; ++c) amax = std::fmax(amax, std::fabs(x[r * cols + c]));
    if (r == 3) {
      EXPECT_EQ(scale[r], 1.f);
    } else {
      EXPECT_EQ(scale[r], amax / 448.f);
    }
    bool has_max = false;
    for (int64_t c = 0; c < cols; ++c) {
      const float v = x[r * cols + c], b = back[r * cols + c];
      // e4m3 keeps 3 mantissa bits: relative error <= 2^-4 for normals, and an absolute
      // 2^-10 * scale below the smallest normal.
      EXPECT_LE(std::fabs(v - b), std::fmax(std::fabs(v) * 0.0625f, scale[r] * 0.0009765625f)) << r << "," << c;
      has_max = has_max || (q[r * cols + c] & 0x7f) == 0x7e;
    }
    if (r != 3) {
      EXPECT_TRUE(has_max) << "row " << r << ": the largest magnitude must map to 448";
    }
  }
}

}  // namespace
}  // namespace indexcache
