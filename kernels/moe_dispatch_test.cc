// The CPU reference of MoE dispatch (kernels/moe_dispatch.h) against its definition: grouping is
// a stable sort of assignments by expert with correct offsets and inverse, and gather + per-row
// MLP-free combine equals the weighted sum written directly per token.
#include "kernels/moe_dispatch.h"

#include <algorithm>
#include <numeric>
#include <random>
#include <vector>

#include "gtest/gtest.h"

namespace indexcache {
namespace {

TEST(MoeDispatchTest, GroupingIsAStableSortByExpert) {
  std::mt19937 rng(3);
  for (int64_t E : {1, 5, 256}) {
    const int64_t T = 37, k = std::min<int64_t>(E, 3), n = T * k;
    std::vector<int32_t> experts(n);
    for (int32_t& e : experts) e = static_cast<int32_t>(rng() % E);
    experts[0] = static_cast<int32_t>(E - 1);  // the last expert is used; the first maybe not
    std::vector<int32_t> order(n), inverse(n), offsets(E + 1);
    MoeGroupByExpertCpu(experts.data(), n, E, order.data(), inverse.data(), offsets.data());
    std::vector<int32_t> want(n);
    std::iota(want.begin(), want.end(), 0);
    std::stable_sort(want.begin(), want.end(), [&](int32_t a, int32_t b) { return experts[a] < experts[b]; });
    EXPECT_EQ(order, want);
    EXPECT_EQ(offsets[0], 0);
    EXPECT_EQ(offsets[E], n);
    for (int64_t e = 0; e < E; ++e) {
      EXPECT_EQ(offsets[e + 1] - offsets[e], std::count(experts.begin(), experts.end(), e)) << e;
      for (int32_t i = offsets[e]; i < offsets[e + 1]; ++i) EXPECT_EQ(experts[order[i]], e);
    }
    for (int64_t a = 0; a < n; ++a) EXPECT_EQ(order[inverse[a]], a);
  }
}

TEST(MoeDispatchTest, GatherThenCombineIsTheWeightedSumPerToken) {
  const int64_t T = 11, k = 3, E = 4, C = 5, n = T * k;
  std::mt19937 rng(4);
  std::normal_distribution<float> dist;
  std::vector<int32_t> experts(n);
  std::vector<float> weights(n), x(T * C), y(T * C);
  for (int64_t t = 0; t < T; ++t) {
    for (int64_t j = 0; j < k; ++j) experts[t * k + j] = static_cast<int32_t>((t + j) % E);
  }
  for (float& v : weights) v = dist(rng);
  for (float& v : x) v = dist(rng);
  for (float& v : y) v = dist(rng);
  std::vector<int32_t> order(n), inverse(n), offsets(E + 1);
  MoeGroupByExpertCpu(experts.data(), n, E, order.data(), inverse.data(), offsets.data());
  std::vector<float> rows(n * C);
  MoeGatherCpu(x.data(), order.data(), n, k, C, rows.data());
  // Stand-in expert: row i of expert e is scaled by (e + 1), so a wrong offset or inverse shows.
  for (int64_t e = 0; e < E; ++e) {
    for (int64_t i = offsets[e]; i < offsets[e + 1]; ++i) {
      for (int64_t c = 0; c < C; ++c) rows[i * C + c] *= static_cast<float>(e + 1);
    }
  }
  std::vector<float> want = y;
  for (int64_t t = 0; t < T; ++t) {
    for (int64_t c = 0; c < C; ++c) {
      float acc = 0.0f;
      for (int64_t j = 0; j < k; ++j) acc += weights[t * k + j] * (experts[t * k + j] + 1) * x[t * C + c];
      want[t * C + c] += acc;
    }
  }
  MoeCombineCpu(rows.data(), inverse.data(), weights.data(), T, k, C, y.data());
  for (int64_t i = 0; i < T * C; ++i) EXPECT_NEAR(y[i], want[i], 1e-5f * (1.0f + std::fabs(want[i]))) << i;
}

}  // namespace
}  // namespace indexcache
