// Gradient norm and clipping: the norm against an fp64 brute force (several buffers, odd sizes,
// sizes over the parallel threshold), clipping scales by exactly the documented coefficient, a
// no-op at or below the max and with clipping off, NaN/Inf detection.
#include "optim/clip.h"

#include <cmath>
#include <cstdint>
#include <limits>
#include <random>
#include <vector>

#include "gtest/gtest.h"

namespace indexcache {
namespace {

std::vector<float> RandomVector(int64_t n, uint32_t seed, float stddev = 1.f) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> normal(0.f, stddev);
  std::vector<float> v(n);
  for (float& x : v) x = normal(rng);
  return v;
}

// Plain left-to-right fp64 sum of squares over every buffer.
double BruteNorm(const std::vector<std::vector<float>>& bufs) {
  double s = 0.0;
  for (const auto& b : bufs) {
    for (float x : b) s += static_cast<double>(x) * x;
  }
  return std::sqrt(s);
}

std::vector<FloatSpan> Spans(std::vector<std::vector<float>>* bufs) {
  std::vector<FloatSpan> spans;
  for (auto& b : *bufs) spans.push_back({b.data(), static_cast<int64_t>(b.size())});
  return spans;
}

TEST(ClipTest, NormMatchesFp64BruteForce) {
  std::vector<std::vector<float>> bufs;
  uint32_t seed = 1;
  for (int64_t n : {17, 127, 281, 100003, 1 << 19, 0, 1}) {
    bufs.push_back(RandomVector(n, seed, 0.01f * seed));  // scales differ buffer to buffer
    ++seed;
  }
  const double want = BruteNorm(bufs);
  const double got = GlobalGradNorm(Spans(&bufs));
  EXPECT_NEAR(got, want, 1e-12 * want);
  // Per buffer too.
  for (const auto& b : bufs) {
    double s = 0.0;
    for (float x : b) s += static_cast<double>(x) * x;
    EXPECT_NEAR(SumOfSquares(b.data(), static_cast<int64_t>(b.size())), s, 1e-12 * s + 1e-300);
  }
  EXPECT_EQ(GlobalGradNorm({}), 0.0);
}

TEST(ClipTest, NormIsAccumulatedInFp64) {
  // 2^20 values of 1 plus one of 2^-12: its square (2^-24) relative to 2^20 is below fp32's
  // precision but within fp64's.
  std::vector<float> v(1 << 20, 1.0f);
  v.push_back(std::ldexp(1.0f, -12));
  const double sum = SumOfSquares(v.data(), static_cast<int64_t>(v.size()));
  EXPECT_EQ(sum, std::ldexp(1.0, 20) + std::ldexp(1.0, -24));
}

TEST(ClipTest, NormIsDeterministic) {
  std::vector<std::vector<float>> bufs = {RandomVector(3000001, 7), RandomVector(281, 8)};
  const double first = GlobalGradNorm(Spans(&bufs));
  for (int i = 0; i < 3; ++i) EXPECT_EQ(GlobalGradNorm(Spans(&bufs)), first);
}

TEST(ClipTest, ClippingScalesEveryBufferExactly) {
  std::vector<std::vector<float>> bufs = {RandomVector(127, 11), RandomVector(281, 12), RandomVector(100003, 13)};
  const std::vector<std::vector<float>> before = bufs;
  const double norm = BruteNorm(bufs);
  const double max_norm = norm / 4;
  const double returned = ClipGradNorm(Spans(&bufs), max_norm);
  EXPECT_NEAR(returned, norm, 1e-12 * norm);  // the pre-clip norm

  const float coef = ClipCoefficient(returned, max_norm);
  EXPECT_EQ(coef, static_cast<float>(max_norm / (returned + kClipNormEps)));
  EXPECT_NEAR(coef, 0.25, 1e-6);
  for (size_t b = 0; b < bufs.size(); ++b) {
    for (size_t i = 0; i < bufs[b].size(); ++i) {
      ASSERT_EQ(bufs[b][i], before[b][i] * coef) << "buffer " << b << " element " << i;
    }
  }
  // The clipped norm is max_norm (up to the 1e-6 in the coefficient and fp32 rounding).
  EXPECT_NEAR(BruteNorm(bufs), max_norm, 1e-6 * max_norm);
}

TEST(ClipTest, NoOpBelowTheMaxAndWhenOff) {
  std::vector<std::vector<float>> bufs = {RandomVector(17, 21), RandomVector(281, 22)};
  const std::vector<std::vector<float>> before = bufs;
  const double norm = BruteNorm(bufs);
  for (double max_norm : {2 * norm, norm + 1e-5, 0.0, -1.0}) {
    const double returned = ClipGradNorm(Spans(&bufs), max_norm);
    EXPECT_NEAR(returned, norm, 1e-12 * norm);
    EXPECT_EQ(bufs, before) << "max_norm " << max_norm;
  }
  EXPECT_EQ(ClipCoefficient(1.0, 2.0), 1.0f);
  EXPECT_EQ(ClipCoefficient(5.0, 0.0), 1.0f);  // clipping off
  EXPECT_EQ(ClipCoefficient(0.0, 1.0), 1.0f);  // zero gradients
  // At exactly the max PyTorch still scales, by max / (max + 1e-6).
  EXPECT_EQ(ClipCoefficient(2.0, 2.0), static_cast<float>(2.0 / (2.0 + 1e-6)));
  EXPECT_LT(ClipCoefficient(2.0, 2.0), 1.0f);
}

TEST(ClipTest, DetectsNanAndInf) {
  std::vector<std::vector<float>> bufs = {RandomVector(127, 31), RandomVector(100003, 32)};
  EXPECT_FALSE(AnyNonFinite(Spans(&bufs)));
  EXPECT_FALSE(AnyNonFinite({}));
  for (float bad : {std::numeric_limits<float>::quiet_NaN(), std::numeric_limits<float>::infinity(),
                    -std::numeric_limits<float>::infinity()}) {
    for (size_t where : {size_t{0}, size_t{50000}, size_t{100002}}) {
      std::vector<std::vector<float>> copy = bufs;
      copy[1][where] = bad;
      EXPECT_TRUE(AnyNonFinite(Spans(&copy))) << bad << " at " << where;
      // The norm shows it, and clipping leaves such gradients alone (the step is skipped).
      std::vector<std::vector<float>> before = copy;
      const double norm = ClipGradNorm(Spans(&copy), 1.0);
      EXPECT_FALSE(std::isfinite(norm));
      EXPECT_EQ(ClipCoefficient(norm, 1.0), 1.0f);
      EXPECT_TRUE(std::isnan(copy[1][where]) || copy[1][where] == bad);
      copy[1][where] = before[1][where] = 0.f;  // NaN != NaN: compare the rest
      EXPECT_EQ(copy, before);
    }
  }
  // The largest finite float is finite (its square overflows fp32 but not fp64).
  std::vector<std::vector<float>> big = {{std::numeric_limits<float>::max(), 1.f}};
  EXPECT_FALSE(AnyNonFinite(Spans(&big)));
  EXPECT_TRUE(std::isfinite(GlobalGradNorm(Spans(&big))));
}

TEST(ClipTest, ScaleInPlace) {
  std::vector<float> v = RandomVector(281, 41);
  const std::vector<float> before = v;
  ScaleInPlace(v.data(), static_cast<int64_t>(v.size()), 0.37f);
  for (size_t i = 0; i < v.size(); ++i) EXPECT_EQ(v[i], before[i] * 0.37f);
}

}  // namespace
}  // namespace indexcache
