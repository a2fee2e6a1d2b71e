// Tests for the lightning indexer's CPU reference (kernels/indexer_topk_cpu.cc): scores and top-k
// selection, checked against an fp64 brute force written here from the definition
//   I[t, s] = sum_h w[t, h] * ReLU(scale * q[t, h] . k[s])   for keys s < key_end(t),
// best first, ties toward the lower key index, -1 / -inf padding.
#include "kernels/indexer_topk.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <numeric>
#include <random>
#include <vector>

#include "gtest/gtest.h"

namespace indexcache {
namespace {

const float kInf = std::numeric_limits<float>::infinity();

struct Problem {
  int64_t T, L, H, D, topk, query_offset = 0;
  float scale;
  std::vector<float> q, k, w;
  std::vector<int32_t> key_end;  // empty = causal

  Problem(int64_t T_, int64_t L_, int64_t H_, int64_t D_, int64_t topk_, uint32_t seed)
      : T(T_), L(L_), H(H_), D(D_), topk(topk_), scale(1.0f / std::sqrt(static_cast<float>(D_))) {
    std::mt19937 rng(seed);
    std::normal_distribution<float> n(0.0f, 1.0f);
    q.resize(T * H * D);
    k.resize(L * D);
    w.resize(T * H);
    for (float& x : q) x = n(rng);
    for (float& x : k) x = n(rng);
    for (float& x : w) x = n(rng) / std::sqrt(static_cast<float>(H));  // signed, as weights_proj gives
  }

  IndexerTopkParams Params(std::vector<int32_t>* idx, std::vector<float>* scores) const {
    idx->assign(T * topk, 12345);
    scores->assign(T * topk, 12345.0f);
    IndexerTopkParams p;
    p.q = q.data();
    p.k = k.data();
    p.weights = w.data();
    p.key_end = key_end.empty() ? nullptr : key_end.data();
    p.T = T, p.L = L, p.H = H, p.D = D, p.topk = topk, p.query_offset = query_offset, p.scale = scale;
    p.out_indices = idx->data();
    p.out_scores = scores->data();
    return p;
  }

  int64_t Valid(int64_t t) const {
    const int64_t end = key_end.empty() ? query_offset + t + 1 : key_end[t];
    return std::clamp<int64_t>(end, 0, L);
  }
  // fp64 score of (t, s), and the magnitude sum_h |w| * scale * sum_d |q k| that bounds fp32 error.
  double Score(int64_t t, int64_t s, double* magnitude = nullptr) const {
    double score = 0.0, mag = 0.0;
    for (int64_t h = 0; h < H; ++h) {
      double dot = 0.0, abs_dot = 0.0;
      for (int64_t d = 0; d < D; ++d) {
        const double prod = static_cast<double>(q[(t * H + h) * D + d]) * k[s * D + d];
        dot += prod;
        abs_dot += std::fabs(prod);
      }
      score += w[t * H + h] * std::max(0.0, static_cast<double>(scale) * dot);
      mag += std::fabs(w[t * H + h]) * scale * abs_dot;
    }
    if (magnitude) *magnitude = mag;
    return score;
  }
  // Valid keys of row t, best first by fp64 score, ties toward the lower index.
  std::vector<int32_t> RefOrder(int64_t t, std::vector<double>* ref) const {
    ref->assign(L, -std::numeric_limits<double>::infinity());
    std::vector<int32_t> order(Valid(t));
    for (int64_t s = 0; s < Valid(t); ++s) (*ref)[s] = Score(t, s);
    std::iota(order.begin(), order.end(), 0);
    std::stable_sort(order.begin(), order.end(), [&](int32_t a, int32_t b) { return (*ref)[a] > (*ref)[b]; });
    return order;
  }
};

// Checks one output row against the fp64 reference: -1/-inf padding after min(topk, valid)
// entries, best-first order, scores equal to the fp64 ones, and the selected set equal to the fp64
// top-k set whenever the fp64 gap at the boundary exceeds twice the largest fp32 score error of
// the row (then no rounding can reorder the boundary). Returns whether that was the case.
bool CheckRow(const Problem& pb, int64_t t, const int32_t* idx, const float* sc) {
  std::vector<double> ref;
  const std::vector<int32_t> order = pb.RefOrder(t, &ref);
  const int64_t valid = pb.Valid(t);
  const int64_t k = std::min(pb.topk, valid);
  std::vector<int32_t> unused_idx;
  std::vector<float> unused_sc, row(pb.L);
  IndexerScoresRowCpu(pb.Params(&unused_idx, &unused_sc), t, row.data());
  double tol = 1e-30, err = 0.0;
  for (int64_t s = 0; s < valid; ++s) {
    double mag;
    pb.Score(t, s, &mag);
    tol = std::max(tol, 1e-5 * mag);
    err = std::max(err, std::fabs(row[s] - ref[s]));
  }
  EXPECT_LE(err, tol) << "t=" << t;
  for (int64_t j = 0; j < pb.topk; ++j) {
    if (j >= k) {
      EXPECT_EQ(idx[j], -1) << "t=" << t << " j=" << j;
      EXPECT_EQ(sc[j], -kInf) << "t=" << t << " j=" << j;
      continue;
    }
    EXPECT_GE(idx[j], 0);
    EXPECT_LT(idx[j], valid) << "t=" << t << " selected a masked key";
    if (idx[j] < 0 || idx[j] >= valid) return false;
    EXPECT_NEAR(sc[j], ref[idx[j]], tol) << "t=" << t << " j=" << j;
    // Position j holds a key whose true score is the j-th best (up to fp32 error).
    EXPECT_NEAR(ref[idx[j]], ref[order[j]], 2 * tol) << "t=" << t << " j=" << j;
    if (j > 0) {
      EXPECT_GE(sc[j - 1], sc[j]) << "t=" << t << " not sorted best-first at j=" << j;
    }
  }
  const bool decisive = k == valid || ref[order[k - 1]] - ref[order[k]] > 2 * err;
  if (decisive) {
    std::vector<int32_t> got(idx, idx + k), want(order.begin(), order.begin() + k);
    std::sort(got.begin(), got.end());
    std::sort(want.begin(), want.end());
    EXPECT_EQ(got, want) << "t=" << t;
  }
  return decisive;
}

TEST(IndexerTopkTest, ScoresRowMatchesFp64) {
  Problem pb(17, 281, 5, 127, 33, 1);
  pb.query_offset = 264;
  std::vector<int32_t> idx;
  std::vector<float> sc;
  const IndexerTopkParams p = pb.Params(&idx, &sc);
  std::vector<float> row(pb.L);
  for (int64_t t = 0; t < pb.T; ++t) {
    IndexerScoresRowCpu(p, t, row.data());
    for (int64_t s = 0; s < pb.L; ++s) {
      if (s > pb.query_offset + t) {
        EXPECT_EQ(row[s], -kInf) << "t=" << t << " s=" << s;
        continue;
      }
      double mag;
      const double ref = pb.Score(t, s, &mag);
      EXPECT_NEAR(row[s], ref, 1e-5 * mag + 1e-30) << "t=" << t << " s=" << s;
    }
  }
}

TEST(IndexerTopkTest, RandomSelectionEqualsFp64TopK) {
  Problem pb(17, 281, 5, 127, 33, 2);
  pb.query_offset = 264;  // every row has >= 265 valid keys
  std::vector<int32_t> idx;
  std::vector<float> sc;
  IndexerTopkCpu(pb.Params(&idx, &sc));
  int decisive = 0;
  for (int64_t t = 0; t < pb.T; ++t) decisive += CheckRow(pb, t, &idx[t * pb.topk], &sc[t * pb.topk]);
  EXPECT_GE(decisive, pb.T - 1);  // random data: boundary ties are (almost) impossible
}

TEST(IndexerTopkTest, CausalPrefillMasksFutureAndPads) {
  // query_offset 0: query t sees keys [0, t]; rows t < topk - 1 have fewer valid keys than k.
  Problem pb(127, 127, 3, 17, 33, 3);
  // Make future keys irresistible: if the mask leaks, they win.
  for (int64_t s = 0; s < pb.L; ++s) {
    for (int64_t d = 0; d < pb.D; ++d) pb.k[s * pb.D + d] = pb.q[(s % pb.T) * pb.H * pb.D + d] * (s > 60 ? 50.f : 1.f);
  }
  for (float& x : pb.w) x = std::fabs(x);
  std::vector<int32_t> idx;
  std::vector<float> sc;
  IndexerTopkCpu(pb.Params(&idx, &sc));
  for (int64_t t = 0; t < pb.T; ++t) {
    for (int64_t j = 0; j < pb.topk; ++j) EXPECT_LE(idx[t * pb.topk + j], t) << "t=" << t;
    CheckRow(pb, t, &idx[t * pb.topk], &sc[t * pb.topk]);
  }
  // Row 0 sees exactly key 0.
  EXPECT_EQ(idx[0], 0);
  for (int64_t j = 1; j < pb.topk; ++j) EXPECT_EQ(idx[j], -1);
}

TEST(IndexerTopkTest, DecodeQueryOffset) {
  // A decode-style block: 3 new queries at the end of a 281-key cache.
  Problem pb(3, 281, 4, 33, 17, 4);
  pb.query_offset = 278;
  // Keys 279 and 280 are the best keys of every query; only the rows that may see them pick them.
  for (int64_t s : {279, 280}) {
    for (int64_t d = 0; d < pb.D; ++d) pb.k[s * pb.D + d] = 20.0f * pb.q[d];
  }
  for (float& x : pb.w) x = std::fabs(x);
  for (int64_t h = 0; h < pb.H; ++h) {
    for (int64_t t = 0; t < pb.T; ++t) {
      for (int64_t d = 0; d < pb.D; ++d) pb.q[(t * pb.H + h) * pb.D + d] = pb.q[d];
    }
  }
  std::vector<int32_t> idx;
  std::vector<float> sc;
  IndexerTopkCpu(pb.Params(&idx, &sc));
  for (int64_t t = 0; t < pb.T; ++t) CheckRow(pb, t, &idx[t * pb.topk], &sc[t * pb.topk]);
  const auto row = [&](int t) { return std::vector<int32_t>(&idx[t * pb.topk], &idx[(t + 1) * pb.topk]); };
  const auto has = [](const std::vector<int32_t>& r, int32_t s) { return std::count(r.begin(), r.end(), s) > 0; };
  EXPECT_FALSE(has(row(0), 279));
  EXPECT_FALSE(has(row(0), 280));
  EXPECT_EQ(row(1)[0], 279);
  EXPECT_FALSE(has(row(1), 280));
  // Identical keys 279 and 280 tie exactly: the lower index comes first.
  EXPECT_EQ(row(2)[0], 279);
  EXPECT_EQ(row(2)[1], 280);
}

TEST(IndexerTopkTest, KeyEndLimitsAndPads) {
  Problem pb(17, 127, 3, 17, 33, 5);
  pb.key_end = {0, 1, 5, 32, 33, 34, 127, 200, -3, 60, 100, 17, 2, 127, 64, 31, 90};
  std::vector<int32_t> idx;
  std::vector<float> sc;
  IndexerTopkCpu(pb.Params(&idx, &sc));
  for (int64_t t = 0; t < pb.T; ++t) CheckRow(pb, t, &idx[t * pb.topk], &sc[t * pb.topk]);
  for (int64_t j = 0; j < pb.topk; ++j) {
    EXPECT_EQ(idx[0 * pb.topk + j], -1);  // key_end 0: nothing valid
    EXPECT_EQ(sc[0 * pb.topk + j], -kInf);
    EXPECT_EQ(idx[8 * pb.topk + j], -1);  // negative key_end clamps to 0
  }
  // key_end 2 (row 12): both keys, in score order, then padding.
  EXPECT_EQ(idx[12 * pb.topk + 2], -1);
  EXPECT_NE(idx[12 * pb.topk + 0], idx[12 * pb.topk + 1]);
}

TEST(IndexerTopkTest, ExactTiesPreferLowerKeyIndex) {
  Problem pb(2, 281, 2, 17, 8, 6);
  pb.query_offset = 280;
  for (float& x : pb.w) x = std::fabs(x) + 0.1f;
  // Row 0: keys 200, 5, 117, 40 are identical copies of a vector far better than the rest.
  for (int64_t s : {200, 5, 117, 40}) {
    for (int64_t d = 0; d < pb.D; ++d) pb.k[s * pb.D + d] = 10.0f * (pb.q[d] + pb.q[pb.D + d]);
  }
  // Row 1: its query is all-negative against non-negative keys: every score is exactly 0.
  std::vector<float> k_pos = pb.k;
  std::vector<int32_t> idx;
  std::vector<float> sc;
  IndexerTopkCpu(pb.Params(&idx, &sc));
  EXPECT_EQ(std::vector<int32_t>(idx.begin(), idx.begin() + 4), (std::vector<int32_t>{5, 40, 117, 200}));
  EXPECT_EQ(sc[0], sc[3]);

  for (float& x : pb.k) x = std::fabs(x);
  for (int64_t i = pb.H * pb.D; i < 2 * pb.H * pb.D; ++i) pb.q[i] = -std::fabs(pb.q[i]) - 0.01f;
  IndexerTopkCpu(pb.Params(&idx, &sc));
  for (int64_t j = 0; j < pb.topk; ++j) {
    EXPECT_EQ(idx[pb.topk + j], j);
    EXPECT_EQ(sc[pb.topk + j], 0.0f);
  }

  // All keys identical: the first k keys, in index order.
  for (int64_t s = 0; s < pb.L; ++s) std::copy(k_pos.begin(), k_pos.begin() + pb.D, pb.k.begin() + s * pb.D);
  IndexerTopkCpu(pb.Params(&idx, &sc));
  for (int64_t t = 0; t < pb.T; ++t) {
    for (int64_t j = 0; j < pb.topk; ++j) EXPECT_EQ(idx[t * pb.topk + j], j) << "t=" << t;
  }
}

TEST(IndexerTopkTest, ScoresOutputIsOptional) {
  Problem pb(17, 281, 3, 17, 33, 7);
  pb.query_offset = 100;
  std::vector<int32_t> idx, idx2;
  std::vector<float> sc, sc2;
  IndexerTopkCpu(pb.Params(&idx, &sc));
  IndexerTopkParams p = pb.Params(&idx2, &sc2);
  p.out_scores = nullptr;
  IndexerTopkCpu(p);
  EXPECT_EQ(idx, idx2);
  EXPECT_TRUE(std::all_of(sc2.begin(), sc2.end(), [](float x) { return x == 12345.0f; }));
}

}  // namespace
}  // namespace indexcache
