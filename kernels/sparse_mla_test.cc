// Tests for sparse MLA (absorbed MQA form), CPU reference (kernels/sparse_mla_cpu.cc), against an
// fp64 dense softmax restricted to each query's index set, written here from the definition:
//   out[t, h] = sum_j softmax_j(scale * q[t, h] . kv[i_j]) * kv[i_j, 0:d_v]
//   lse[t, h] = log sum_j exp(scale * q[t, h] . kv[i_j]);  -1 entries skipped, duplicates count.
#include "kernels/sparse_mla.h"

#include <cmath>
#include <cstdint>
#include <limits>
#include <random>
#include <vector>

#include "gtest/gtest.h"

namespace indexcache {
namespace {

constexpr int64_t T = 17, H = 3, D_QK = 72, D_V = 64, L = 281, TOPK = 33;

struct Inputs {
  std::vector<float> q, kv;
  std::vector<int32_t> idx;
  float scale = 1.0f / std::sqrt(static_cast<float>(D_QK));
};

Inputs Random(uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> n(0.0f, 1.0f);
  Inputs in;
  in.q.resize(T * H * D_QK);
  in.kv.resize(L * D_QK);
  for (float& x : in.q) x = 2.0f * n(rng);  // peaky enough that the softmax is not near-uniform
  for (float& x : in.kv) x = n(rng);
  std::uniform_int_distribution<int32_t> key(0, L - 1);
  in.idx.resize(T * TOPK);
  for (int32_t& i : in.idx) i = key(rng);
  return in;
}

struct Outputs {
  std::vector<float> out, lse;
};

Outputs RunSparseMla(const Inputs& in, bool with_lse = true) {
  Outputs o;
  o.out.assign(T * H * D_V, 777.0f);
  o.lse.assign(T * H, 777.0f);
  SparseMlaParams p;
  p.q = in.q.data();
  p.kv = in.kv.data();
  p.indices = in.idx.data();
  p.T = T, p.H = H, p.d_qk = D_QK, p.d_v = D_V, p.L = L, p.topk = TOPK;
  p.scale = in.scale;
  p.out = o.out.data();
  p.lse = with_lse ? o.lse.data() : nullptr;
  SparseMlaCpu(p);
  return o;
}

// fp64 reference for (t, h): returns lse (+inf when no valid index) and fills out[D_V].
double Reference(const Inputs& in, int64_t t, int64_t h, std::vector<double>* out) {
  out->assign(D_V, 0.0);
  std::vector<double> logits;
  std::vector<int32_t> keys;
  for (int64_t j = 0; j < TOPK; ++j) {
    const int32_t s = in.idx[t * TOPK + j];
    if (s == -1) continue;
    double dot = 0.0;
    for (int64_t d = 0; d < D_QK; ++d) dot += static_cast<double>(in.q[(t * H + h) * D_QK + d]) * in.kv[s * D_QK + d];
    logits.push_back(dot * in.scale);
    keys.push_back(s);
  }
  if (keys.empty()) return std::numeric_limits<double>::infinity();
  double denom = 0.0;
  for (double l : logits) denom += std::exp(l);  // logits are small enough for a direct sum
  for (size_t j = 0; j < keys.size(); ++j) {
    const double p = std::exp(logits[j]) / denom;
    for (int64_t d = 0; d < D_V; ++d) (*out)[d] += p * in.kv[keys[j] * D_QK + d];
  }
  return std::log(denom);
}

void ExpectMatchesReference(const Inputs& in, const Outputs& o) {
  std::vector<double> ref;
  for (int64_t t = 0; t < T; ++t) {
    for (int64_t h = 0; h < H; ++h) {
      const double lse = Reference(in, t, h, &ref);
      if (std::isinf(lse)) {
        EXPECT_EQ(o.lse[t * H + h], std::numeric_limits<float>::infinity()) << "t=" << t << " h=" << h;
      } else {
        EXPECT_NEAR(o.lse[t * H + h], lse, 1e-5 * (1.0 + std::fabs(lse))) << "t=" << t << " h=" << h;
      }
      for (int64_t d = 0; d < D_V; ++d) {
        EXPECT_NEAR(o.out[(t * H + h) * D_V + d], ref[d], 2e-5) << "t=" << t << " h=" << h << " d=" << d;
      }
    }
  }
}

TEST(SparseMlaTest, MatchesFp64RestrictedSoftmax) {
  const Inputs in = Random(1);
  const Outputs o = RunSparseMla(in);
  ExpectMatchesReference(in, o);
}

TEST(SparseMlaTest, SkipsMinusOneEntries) {
  Inputs in = Random(2);
  std::mt19937 rng(22);
  for (int32_t& i : in.idx) {
    if (rng() % 3 == 0) i = -1;
  }
  const Outputs o = RunSparseMla(in);
  ExpectMatchesReference(in, o);

  // Moving the -1 entries to the end of the row changes nothing.
  Inputs packed = in;
  for (int64_t t = 0; t < T; ++t) {
    int64_t w = 0;
    for (int64_t j = 0; j < TOPK; ++j) {
      if (in.idx[t * TOPK + j] >= 0) packed.idx[t * TOPK + w++] = in.idx[t * TOPK + j];
    }
    for (; w < TOPK; ++w) packed.idx[t * TOPK + w] = -1;
  }
  const Outputs o2 = RunSparseMla(packed);
  for (size_t i = 0; i < o.out.size(); ++i) EXPECT_NEAR(o.out[i], o2.out[i], 1e-6);
  for (size_t i = 0; i < o.lse.size(); ++i) EXPECT_NEAR(o.lse[i], o2.lse[i], 1e-5);
}

TEST(SparseMlaTest, AllMinusOneGivesZeroAndInfiniteLse) {
  Inputs in = Random(3);
  for (int64_t j = 0; j < TOPK; ++j) {
    in.idx[4 * TOPK + j] = -1;
    in.idx[16 * TOPK + j] = -1;
  }
  const Outputs o = RunSparseMla(in);
  ExpectMatchesReference(in, o);
  for (int64_t t : {4, 16}) {
    for (int64_t h = 0; h < H; ++h) {
      EXPECT_EQ(o.lse[t * H + h], std::numeric_limits<float>::infinity());
      for (int64_t d = 0; d < D_V; ++d) EXPECT_EQ(o.out[(t * H + h) * D_V + d], 0.0f);
    }
  }
}

// Issue 12: all-NaN scores were taken for "no valid key" (max(-inf, NaN) = -inf) and laundered
// into finite zeros. NaN must come out as NaN, for the forward's non-finite check to see it.
TEST(SparseMlaTest, NaNScoresPropagateInsteadOfBecomingZeros) {
  Inputs in = Random(5);
  for (int64_t d = 0; d < D_QK; ++d) in.q[(6 * H + 1) * D_QK + d] = std::numeric_limits<float>::quiet_NaN();
  in.q[(9 * H + 2) * D_QK] = std::numeric_limits<float>::quiet_NaN();  // one NaN component
  const Outputs o = RunSparseMla(in);
  for (int64_t th : {6 * H + 1, 9 * H + 2}) {
    EXPECT_TRUE(std::isnan(o.lse[th]));
    for (int64_t d = 0; d < D_V; ++d) EXPECT_TRUE(std::isnan(o.out[th * D_V + d])) << th << " " << d;
  }
  // Other queries are untouched.
  EXPECT_TRUE(std::isfinite(o.lse[6 * H]));
}

TEST(SparseMlaTest, LseIsNaturalLogSumExp) {
  // One query, hand-checkable: keys a and b only; lse = log(e^{la} + e^{lb}).
  Inputs in = Random(4);
  for (int64_t t = 0; t < T; ++t) {
    for (int64_t j = 0; j < TOPK; ++j) in.idx[t * TOPK + j] = j == 3 ? 10 : (j == 20 ? 250 : -1);
  }
  const Outputs o = RunSparseMla(in);
  for (int64_t t = 0; t < T; ++t) {
    for (int64_t h = 0; h < H; ++h) {
      double la = 0, lb = 0;
      for (int64_t d = 0; d < D_QK; ++d) {
        la += double(in.q[(t * H + h) * D_QK + d]) * in.kv[10 * D_QK + d] * in.scale;
        lb += double(in.q[(t * H + h) * D_QK + d]) * in.kv[250 * D_QK + d] * in.scale;
      }
      const double lse = std::log(std::exp(la) + std::exp(lb));
      EXPECT_NEAR(o.lse[t * H + h], lse, 1e-5 * (1 + std::fabs(lse)));
      const double pa = std::exp(la - lse);
      for (int64_t d = 0; d < D_V; ++d) {
        EXPECT_NEAR(o.out[(t * H + h) * D_V + d], pa * in.kv[10 * D_QK + d] + (1 - pa) * in.kv[250 * D_QK + d], 2e-5);
      }
    }
  }
  // lse is optional; out does not depend on it.
  const Outputs o2 = RunSparseMla(in, /*with_lse=*/false);
  EXPECT_EQ(o.out, o2.out);
  for (float x : o2.lse) EXPECT_EQ(x, 777.0f);
}

TEST(SparseMlaTest, DuplicateIndicesCountPerOccurrence) {
  Inputs in = Random(5);
  // Row t: key 7 three times, key 100 once, rest -1.  Weights 3 e^{l7} : e^{l100}.
  for (int64_t t = 0; t < T; ++t) {
    for (int64_t j = 0; j < TOPK; ++j) in.idx[t * TOPK + j] = -1;
    in.idx[t * TOPK + 0] = 7;
    in.idx[t * TOPK + 9] = 100;
    in.idx[t * TOPK + 15] = 7;
    in.idx[t * TOPK + 32] = 7;
  }
  const Outputs o = RunSparseMla(in);
  ExpectMatchesReference(in, o);
  for (int64_t h = 0; h < H; ++h) {
    double l7 = 0, l100 = 0;
    for (int64_t d = 0; d < D_QK; ++d) {
      l7 += double(in.q[h * D_QK + d]) * in.kv[7 * D_QK + d] * in.scale;
      l100 += double(in.q[h * D_QK + d]) * in.kv[100 * D_QK + d] * in.scale;
    }
    EXPECT_NEAR(o.lse[h], std::log(3 * std::exp(l7) + std::exp(l100)), 1e-5 * (1 + std::fabs(l7) + std::fabs(l100)));
  }
  // Mixed random rows with random duplicates also match the per-occurrence reference.
  Inputs dup = Random(6);
  for (int64_t t = 0; t < T; ++t) {
    for (int64_t j = 0; j < TOPK; ++j) dup.idx[t * TOPK + j] = dup.idx[t * TOPK + (j * 7) % 5];
  }
  ExpectMatchesReference(dup, RunSparseMla(dup));
}

}  // namespace
}  // namespace indexcache
