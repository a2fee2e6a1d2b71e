// Tests for rotary position embedding, CPU reference (kernels/rope_cpu.cc): inverse frequencies
// (default and yarn, recomputed here in double from transformers' formulas), the tables, the two
// layouts (interleaved, half-split) and the properties rope must have.
#include "kernels/rope.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <random>
#include <vector>

#include "gtest/gtest.h"

namespace indexcache {
namespace {

RopeConfig DefaultRope(double theta) {
  RopeConfig r;
  r.theta = theta;
  return r;
}

RopeConfig Yarn(double theta, double factor, int64_t original_max, double beta_fast = 32, double beta_slow = 1) {
  RopeConfig r;
  r.type = RopeType::kYarn;
  r.theta = theta;
  r.factor = factor;
  r.original_max_position_embeddings = original_max;
  r.beta_fast = beta_fast;
  r.beta_slow = beta_slow;
  return r;
}

// transformers' _compute_yarn_parameters, in double.
std::vector<double> YarnInvFreqRef(double dim, double base, double factor, double orig_max, double beta_fast,
                                   double beta_slow, bool truncate) {
  const auto find_correction_dim = [&](double rot) {
    return dim * std::log(orig_max / (rot * 2 * M_PI)) / (2 * std::log(base));
  };
  double low = find_correction_dim(beta_fast), high = find_correction_dim(beta_slow);
  if (truncate) low = std::floor(low), high = std::ceil(high);
  low = std::max(low, 0.0);
  high = std::min(high, dim - 1);
  if (low == high) high += 0.001;
  std::vector<double> inv;
  for (int i = 0; i < dim / 2; ++i) {
    const double pos_freq = std::pow(base, 2.0 * i / dim);
    const double ramp = std::clamp((i - low) / (high - low), 0.0, 1.0);
    const double extrapolation_factor = 1.0 - ramp;
    inv.push_back(1.0 / (factor * pos_freq) * (1 - extrapolation_factor) + 1.0 / pos_freq * extrapolation_factor);
  }
  return inv;
}

std::vector<float> RandomVec(size_t n, uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> d(0.0f, 1.0f);
  std::vector<float> v(n);
  for (float& x : v) x = d(rng);
  return v;
}

TEST(RopeTest, DefaultInverseFrequencies) {
  for (double theta : {10000.0, 1e6}) {
    for (int64_t dim : {8, 64, 126}) {
      const std::vector<float> inv = RopeInverseFrequencies(DefaultRope(theta), dim);
      ASSERT_EQ(static_cast<int64_t>(inv.size()), dim / 2);
      for (int64_t i = 0; i < dim / 2; ++i) {
        const double want = 1.0 / std::pow(theta, 2.0 * i / dim);
        EXPECT_NEAR(inv[i], want, 2e-6 * want) << "theta=" << theta << " dim=" << dim << " i=" << i;
      }
    }
  }
}

TEST(RopeTest, TableIsCosSinOfPositionTimesFrequency) {
  const RopeConfig rope = DefaultRope(10000.0);
  const RopeTable t = BuildRopeTable(rope, 64, /*first_position=*/100, /*num_positions=*/17);
  ASSERT_EQ(t.cos.size(), 17u * 32);
  for (int64_t p = 0; p < 17; ++p) {
    for (int64_t i = 0; i < 32; ++i) {
      const double angle = (100.0 + p) / std::pow(10000.0, 2.0 * i / 64);
      EXPECT_NEAR(t.cos[p * 32 + i], std::cos(angle), 1e-4) << p << " " << i;
      EXPECT_NEAR(t.sin[p * 32 + i], std::sin(angle), 1e-4) << p << " " << i;
    }
  }
}

TEST(RopeTest, RotationPreservesNormsAndLeavesOtherDims) {
  // 17 rows x 3 heads; each head has 72 floats of which the first 64 rotate.
  const int64_t rows = 17, heads = 3, head_stride = 72, rope_dim = 64;
  const RopeTable t = BuildRopeTable(DefaultRope(10000.0), rope_dim, 5, rows);
  for (bool interleaved : {true, false}) {
    const std::vector<float> x0 = RandomVec(rows * heads * head_stride, 1);
    std::vector<float> x = x0;
    if (interleaved) ApplyRopeInterleavedCpu(t, x.data(), rows, heads, heads * head_stride, head_stride);
    else ApplyRopeHalfSplitCpu(t, x.data(), rows, heads, heads * head_stride, head_stride);
    for (int64_t r = 0; r < rows; ++r) {
      for (int64_t h = 0; h < heads; ++h) {
        const int64_t base = (r * heads + h) * head_stride;
        double n0 = 0, n1 = 0;
        for (int64_t d = 0; d < rope_dim; ++d) n0 += double(x0[base + d]) * x0[base + d], n1 += double(x[base + d]) * x[base + d];
        EXPECT_NEAR(n1, n0, 1e-5 * n0) << "r=" << r << " h=" << h;
        for (int64_t d = rope_dim; d < head_stride; ++d) EXPECT_EQ(x[base + d], x0[base + d]);
      }
    }
    // Row 0 (position 5) really rotated.
    EXPECT_GT(std::fabs(x[0] - x0[0]) + std::fabs(x[1] - x0[1]), 1e-3);
  }
}

TEST(RopeTest, InterleavedAndHalfSplitAgreeAfterPermutation) {
  const int64_t rows = 17, heads = 3, dim = 64, half = 32;
  const RopeTable t = BuildRopeTable(DefaultRope(10000.0), dim, 0, rows);
  const std::vector<float> x = RandomVec(rows * heads * dim, 2);
  // y holds x's pair i = (x[2i], x[2i+1]) at (y[i], y[i + half]).
  std::vector<float> y(x.size());
  for (int64_t v = 0; v < rows * heads; ++v) {
    for (int64_t i = 0; i < half; ++i) y[v * dim + i] = x[v * dim + 2 * i], y[v * dim + i + half] = x[v * dim + 2 * i + 1];
  }
  std::vector<float> xr = x, yr = y;
  ApplyRopeInterleavedCpu(t, xr.data(), rows, heads, heads * dim, dim);
  ApplyRopeHalfSplitCpu(t, yr.data(), rows, heads, heads * dim, dim);
  for (int64_t v = 0; v < rows * heads; ++v) {
    for (int64_t i = 0; i < half; ++i) {
      EXPECT_FLOAT_EQ(yr[v * dim + i], xr[v * dim + 2 * i]);
      EXPECT_FLOAT_EQ(yr[v * dim + i + half], xr[v * dim + 2 * i + 1]);
    }
  }
}

TEST(RopeTest, DotProductDependsOnlyOnRelativePosition) {
  // q at position m, k at position n, pair i rotated by angle p w_i at position p:
  //   q(m).k(n) = sum_i (q0 k0 + q1 k1) cos((m-n) w_i) + (q0 k1 - q1 k0) sin((m-n) w_i).
  const int64_t dim = 32, half = 16, positions = 281;
  const RopeConfig rope = DefaultRope(10000.0);
  const RopeTable t = BuildRopeTable(rope, dim, 0, positions);
  const std::vector<float> q = RandomVec(dim, 3), k = RandomVec(dim, 4);
  // Row p of these arrays is q (or k) rotated to position p.
  std::vector<float> qs(positions * dim), ks(positions * dim);
  for (int64_t p = 0; p < positions; ++p) {
    std::copy(q.begin(), q.end(), qs.begin() + p * dim);
    std::copy(k.begin(), k.end(), ks.begin() + p * dim);
  }
  ApplyRopeInterleavedCpu(t, qs.data(), positions, 1, dim, dim);
  ApplyRopeInterleavedCpu(t, ks.data(), positions, 1, dim, dim);
  const auto dot = [&](int64_t m, int64_t n) {
    double s = 0;
    for (int64_t d = 0; d < dim; ++d) s += double(qs[m * dim + d]) * ks[n * dim + d];
    return s;
  };
  for (int64_t delta : {0, 1, 7, 127, -5}) {
    double want = 0;
    for (int64_t i = 0; i < half; ++i) {
      const double w = 1.0 / std::pow(10000.0, 2.0 * i / dim), a = delta * w;
      const double q0 = q[2 * i], q1 = q[2 * i + 1], k0 = k[2 * i], k1 = k[2 * i + 1];
      want += (q0 * k0 + q1 * k1) * std::cos(a) + (q0 * k1 - q1 * k0) * std::sin(a);
    }
    for (int64_t n : {10, 17, 100, 150}) {
      EXPECT_NEAR(dot(n + delta, n), want, 2e-3) << "delta=" << delta << " n=" << n;
    }
  }
}

TEST(RopeTest, YarnHandComputedInverseFrequencies) {
  // dim 8, theta 1e4, factor 4, original max 128, beta_fast 32, beta_slow 1:
  // correction dims: low = floor(-0.196) -> 0, high = ceil(1.309) = 2; ramp over i = 0..3 is
  // 0, 0.5, 1, 1, so inv = [1, (0.1/4 + 0.1)/2, 0.01/4, 0.001/4].
  const std::vector<double> ref = YarnInvFreqRef(8, 10000, 4, 128, 32, 1, true);
  const std::vector<double> hand = {1.0, 0.0625, 0.0025, 0.00025};
  const std::vector<float> inv = RopeInverseFrequencies(Yarn(10000, 4, 128), 8);
  ASSERT_EQ(inv.size(), 4u);
  for (int i = 0; i < 4; ++i) {
    EXPECT_NEAR(ref[i], hand[i], 1e-12 * hand[i]) << i;
    EXPECT_NEAR(inv[i], hand[i], 1e-6 * hand[i]) << i;
  }
}

TEST(RopeTest, YarnMatchesTransformersFormulas) {
  struct Case {
    int64_t dim;
    double theta, factor;
    int64_t orig;
    double beta_fast, beta_slow;
    bool truncate;
  };
  for (const Case& c : {Case{64, 10000, 40, 4096, 32, 1, true}, Case{64, 10000, 40, 4096, 32, 1, false},
                        Case{64, 1e6, 8, 8192, 32, 1, true}, Case{126, 50000, 2.5, 2048, 16, 2, true},
                        // high = ceil(10.5) = 11 lies between dim/2 - 1 and dim - 1: the clamp is to dim - 1.
                        Case{16, 10000, 4, 600000, 32, 1, true}}) {
    RopeConfig rope = Yarn(c.theta, c.factor, c.orig, c.beta_fast, c.beta_slow);
    rope.truncate = c.truncate;
    const std::vector<float> inv = RopeInverseFrequencies(rope, c.dim);
    const std::vector<double> ref = YarnInvFreqRef(c.dim, c.theta, c.factor, c.orig, c.beta_fast, c.beta_slow, c.truncate);
    ASSERT_EQ(inv.size(), ref.size());
    for (size_t i = 0; i < ref.size(); ++i) EXPECT_NEAR(inv[i], ref[i], 2e-6 * ref[i]) << "dim=" << c.dim << " i=" << i;
  }
}

TEST(RopeTest, YarnEdgeValues) {
  // factor 1: interpolation == extrapolation, so yarn equals the default frequencies.
  const std::vector<float> plain = RopeInverseFrequencies(DefaultRope(10000), 64);
  const std::vector<float> yarn1 = RopeInverseFrequencies(Yarn(10000, 1.0, 4096), 64);
  for (size_t i = 0; i < plain.size(); ++i) EXPECT_NEAR(yarn1[i], plain[i], 1e-6 * plain[i]);
  // A tiny original context: both correction dims clamp (low 0, high dim-1 or below).
  const std::vector<float> tiny = RopeInverseFrequencies(Yarn(10000, 4.0, 2), 16);
  const std::vector<double> tiny_ref = YarnInvFreqRef(16, 10000, 4.0, 2, 32, 1, true);
  for (size_t i = 0; i < tiny.size(); ++i) EXPECT_NEAR(tiny[i], tiny_ref[i], 2e-6 * tiny_ref[i]) << i;
  // A huge original context: both correction dims lie beyond the rotated dims (high clamps to dim - 1).
  const std::vector<float> huge = RopeInverseFrequencies(Yarn(10000, 4.0, int64_t{1} << 40), 16);
  const std::vector<double> huge_ref = YarnInvFreqRef(16, 10000, 4.0, double(int64_t{1} << 40), 32, 1, true);
  for (size_t i = 0; i < huge.size(); ++i) EXPECT_NEAR(huge[i], huge_ref[i], 2e-6 * huge_ref[i]) << i;
  // beta_fast == beta_slow: zero-width ramp widened by 0.001 (a step at the correction dim).
  const std::vector<float> step = RopeInverseFrequencies(Yarn(10000, 4.0, 4096, 8, 8), 32);
  const std::vector<double> step_ref = YarnInvFreqRef(32, 10000, 4.0, 4096, 8, 8, true);
  for (size_t i = 0; i < step.size(); ++i) EXPECT_NEAR(step[i], step_ref[i], 2e-6 * step_ref[i]) << i;
}

TEST(RopeTest, AttentionFactorScalesCosAndSin) {
  RopeConfig rope = Yarn(10000, 40, 4096);
  rope.attention_factor = 1.0;
  const RopeTable t1 = BuildRopeTable(rope, 64, 3, 17);
  rope.attention_factor = 1.3689;
  const RopeTable t2 = BuildRopeTable(rope, 64, 3, 17);
  for (size_t i = 0; i < t1.cos.size(); ++i) {
    EXPECT_NEAR(t2.cos[i], 1.3689 * t1.cos[i], 1e-6);
    EXPECT_NEAR(t2.sin[i], 1.3689 * t1.sin[i], 1e-6);
  }
  // So a rotated vector's norm scales by the factor.
  std::vector<float> x = RandomVec(64, 5);
  double n0 = 0, n1 = 0;
  for (float v : x) n0 += double(v) * v;
  ApplyRopeHalfSplitCpu(t2, x.data(), 1, 1, 64, 64);
  for (float v : x) n1 += double(v) * v;
  EXPECT_NEAR(std::sqrt(n1 / n0), 1.3689, 1e-5);
}

}  // namespace
}  // namespace indexcache
