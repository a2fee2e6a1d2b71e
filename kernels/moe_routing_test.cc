// Tests for deepseek_v3-family MoE routing, CPU reference (kernels/moe_routing_cpu.cc), against an
// fp64 reference written here from the routing definition: sigmoid scores; the bias is added only
// for choosing; a group's rating is the sum of its top-2 biased scores; keep topk_group groups;
// top-k experts among them; weights = UNBIASED scores, normalised if norm_topk_prob, times
// routed_scaling_factor.  Ties toward the lower index.
#include "kernels/moe_routing.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <map>
#include <numeric>
#include <random>
#include <vector>

#include "gtest/gtest.h"

namespace indexcache {
namespace {

struct Routing {
  int64_t T, E, n_group, topk_group, topk;
  bool norm = true;
  double scaling = 1.0;
  std::vector<float> logits, bias;  // bias empty = none
};

Routing RandomRouting(int64_t T, int64_t E, int64_t n_group, int64_t topk_group, int64_t topk, uint32_t seed) {
  Routing r{T, E, n_group, topk_group, topk};
  std::mt19937 rng(seed);
  std::normal_distribution<float> n(0.0f, 1.5f);
  r.logits.resize(T * E);
  for (float& x : r.logits) x = n(rng);
  r.bias.resize(E);
  for (float& x : r.bias) x = 0.1f * n(rng);
  return r;
}

// Runs the code under test; returns expert -> weight for each token.
std::vector<std::map<int32_t, float>> RunRouting(const Routing& r) {
  std::vector<int32_t> experts(r.T * r.topk, -7);
  std::vector<float> weights(r.T * r.topk, -7.0f);
  MoeRoutingParams p;
  p.logits = r.logits.data();
  p.bias = r.bias.empty() ? nullptr : r.bias.data();
  p.T = r.T, p.E = r.E, p.n_group = r.n_group, p.topk_group = r.topk_group, p.topk = r.topk;
  p.norm_topk_prob = r.norm;
  p.routed_scaling_factor = static_cast<float>(r.scaling);
  p.out_experts = experts.data();
  p.out_weights = weights.data();
  MoeRoutingCpu(p);
  std::vector<std::map<int32_t, float>> out(r.T);
  for (int64_t t = 0; t < r.T; ++t) {
    for (int64_t j = 0; j < r.topk; ++j) {
      const int32_t e = experts[t * r.topk + j];
      EXPECT_GE(e, 0);
      EXPECT_LT(e, r.E);
      EXPECT_EQ(out[t].count(e), 0u) << "expert " << e << " chosen twice, t=" << t;
      out[t][e] = weights[t * r.topk + j];
    }
  }
  return out;
}

// Indices of v sorted descending, ties toward the lower index.
std::vector<int64_t> ArgsortDesc(const std::vector<double>& v) {
  std::vector<int64_t> o(v.size());
  std::iota(o.begin(), o.end(), 0);
  std::stable_sort(o.begin(), o.end(), [&](int64_t a, int64_t b) { return v[a] > v[b]; });
  return o;
}

std::vector<std::map<int32_t, double>> Reference(const Routing& r) {
  std::vector<std::map<int32_t, double>> out(r.T);
  const int64_t per = r.E / r.n_group;
  for (int64_t t = 0; t < r.T; ++t) {
    std::vector<double> score(r.E), choice(r.E);
    for (int64_t e = 0; e < r.E; ++e) {
      score[e] = 1.0 / (1.0 + std::exp(-static_cast<double>(r.logits[t * r.E + e])));
      choice[e] = score[e] + (r.bias.empty() ? 0.0 : r.bias[e]);
    }
    std::vector<double> group(r.n_group);
    for (int64_t g = 0; g < r.n_group; ++g) {
      std::vector<double> members(choice.begin() + g * per, choice.begin() + (g + 1) * per);
      std::sort(members.rbegin(), members.rend());
      group[g] = members[0] + members[1];
    }
    const std::vector<int64_t> group_order = ArgsortDesc(group);
    std::vector<double> masked(r.E, -1e300);
    for (int64_t i = 0; i < r.topk_group; ++i) {
      for (int64_t e = group_order[i] * per; e < (group_order[i] + 1) * per; ++e) masked[e] = choice[e];
    }
    const std::vector<int64_t> expert_order = ArgsortDesc(masked);
    double sum = 0.0;
    for (int64_t j = 0; j < r.topk; ++j) sum += score[expert_order[j]];
    for (int64_t j = 0; j < r.topk; ++j) {
      const double w = score[expert_order[j]];
      out[t][static_cast<int32_t>(expert_order[j])] = (r.norm ? w / sum : w) * r.scaling;
    }
  }
  return out;
}

void ExpectMatchesReference(const Routing& r) {
  const auto got = RunRouting(r);
  const auto want = Reference(r);
  for (int64_t t = 0; t < r.T; ++t) {
    ASSERT_EQ(got[t].size(), want[t].size());
    for (const auto& [e, w] : want[t]) {
      ASSERT_EQ(got[t].count(e), 1u) << "t=" << t << ": expert " << e << " not chosen";
      EXPECT_NEAR(got[t].at(e), w, 1e-6 * (1.0 + std::fabs(w))) << "t=" << t << " e=" << e;
    }
  }
}

TEST(MoeRoutingTest, GroupLimitedMatchesFp64) {
  // 72 experts in 8 groups of 9; keep 3 groups; 7 experts per token.
  Routing r = RandomRouting(17, 72, 8, 3, 7, 1);
  r.scaling = 2.5;
  ExpectMatchesReference(r);
}

TEST(MoeRoutingTest, SingleGroupMatchesFp64) {
  Routing r = RandomRouting(17, 127, 1, 1, 9, 2);
  ExpectMatchesReference(r);
  r.bias.clear();  // no bias at all
  ExpectMatchesReference(r);
}

TEST(MoeRoutingTest, NoNormalisation) {
  Routing r = RandomRouting(17, 64, 4, 2, 6, 3);
  r.norm = false;
  r.scaling = 1.8;
  ExpectMatchesReference(r);
  // Without normalisation each weight is exactly scaling * sigmoid(logit).
  const auto got = RunRouting(r);
  for (int64_t t = 0; t < r.T; ++t) {
    for (const auto& [e, w] : got[t]) {
      EXPECT_NEAR(w, 1.8 / (1.0 + std::exp(-double(r.logits[t * r.E + e]))), 1e-6);
    }
  }
}

TEST(MoeRoutingTest, BiasChoosesButDoesNotWeigh) {
  // 1 token, 6 experts, one group, top-2.  Expert 1 has the best score but a large negative bias;
  // expert 4 a poor score and a large positive bias.  Chosen: 4 and 0; weights from raw sigmoids.
  Routing r{1, 6, 1, 1, 2};
  r.logits = {1.0f, 3.0f, -1.0f, 0.5f, -2.0f, 0.0f};
  r.bias = {0.0f, -1.0f, 0.0f, 0.0f, 1.0f, 0.0f};
  const auto sig = [](double x) { return 1.0 / (1.0 + std::exp(-x)); };
  const auto got = RunRouting(r);
  ASSERT_EQ(got[0].count(4), 1u);
  ASSERT_EQ(got[0].count(0), 1u);
  const double s4 = sig(-2.0), s0 = sig(1.0);
  EXPECT_NEAR(got[0].at(4), s4 / (s4 + s0), 1e-6);
  EXPECT_NEAR(got[0].at(0), s0 / (s4 + s0), 1e-6);
  ExpectMatchesReference(r);
  // Without the bias the choice is experts 1 and 0.
  r.bias.clear();
  const auto plain = RunRouting(r);
  EXPECT_EQ(plain[0].count(1), 1u);
  EXPECT_EQ(plain[0].count(0), 1u);
}

TEST(MoeRoutingTest, BiasChoosesGroups) {
  // 8 experts in 4 groups of 2, keep 1 group, top-2.  Unbiased, group 0 is best; the bias on
  // group 3 makes it win, so the experts come from group 3 with their unbiased weights.
  Routing r{1, 8, 4, 1, 2};
  r.logits = {2.0f, 2.0f, 0.0f, 0.0f, 0.0f, 0.0f, -1.0f, -1.5f};
  r.bias = {0.0f, 0.0f, 0.0f, 0.0f, 0.0f, 0.0f, 0.8f, 0.8f};
  auto got = RunRouting(r);
  ASSERT_EQ(got[0].count(6), 1u);
  ASSERT_EQ(got[0].count(7), 1u);
  const double s6 = 1.0 / (1.0 + std::exp(1.0)), s7 = 1.0 / (1.0 + std::exp(1.5));
  EXPECT_NEAR(got[0].at(6), s6 / (s6 + s7), 1e-6);
  ExpectMatchesReference(r);
  // Group rating is the sum of the TOP-2 members (not the max): group 1 = {0.95, 0.95} beats
  // group 0 = {0.99, 0.0} once each group has 3 members.
  Routing g{1, 6, 2, 1, 2};
  g.logits = {4.6f, -9.0f, -9.0f, 2.9f, 2.9f, -9.0f};
  got = RunRouting(g);
  EXPECT_EQ(got[0].count(3), 1u);
  EXPECT_EQ(got[0].count(4), 1u);
  ExpectMatchesReference(g);
}

TEST(MoeRoutingTest, TiesPreferLowerIndex) {
  // All logits equal: the lowest experts of the lowest groups win.
  Routing r{2, 12, 3, 2, 5};
  r.logits.assign(2 * 12, 0.25f);
  const auto got = RunRouting(r);
  for (int64_t t = 0; t < 2; ++t) {
    std::vector<int32_t> chosen;
    for (const auto& [e, w] : got[t]) {
      chosen.push_back(e);
      EXPECT_NEAR(w, 0.2, 1e-6);
    }
    EXPECT_EQ(chosen, (std::vector<int32_t>{0, 1, 2, 3, 4}));
  }
  // Many equal experts (more than a small-array sort keeps in order) in one group.
  Routing one{3, 127, 1, 1, 9};
  one.logits.assign(3 * 127, -0.5f);
  const auto got1 = RunRouting(one);
  for (int64_t t = 0; t < 3; ++t) {
    std::vector<int32_t> chosen;
    for (const auto& [e, w] : got1[t]) chosen.push_back(e);
    EXPECT_EQ(chosen, (std::vector<int32_t>{0, 1, 2, 3, 4, 5, 6, 7, 8}));
  }
  // Equal groups too: 8 groups of 16 equal experts, keep 3, top 7 -> experts 0..6.
  Routing groups{1, 128, 8, 3, 7};
  groups.logits.assign(128, 1.0f);
  const auto got_groups = RunRouting(groups);
  std::vector<int32_t> chosen;
  for (const auto& [e, w] : got_groups[0]) chosen.push_back(e);
  EXPECT_EQ(chosen, (std::vector<int32_t>{0, 1, 2, 3, 4, 5, 6}));
}

// moe_routing.h's rule for non-finite inputs: a NaN score ranks as -inf (ties to the lower
// index), so finite experts win and a NaN-scored expert is chosen only when too few rank above
// -inf; its NaN weight then reaches every weight of the token through the normalisation.
TEST(MoeRoutingTest, NanRanksAsMinusInfinity) {
  const float nan = std::numeric_limits<float>::quiet_NaN();
  auto route = [](const std::vector<float>& logits, int64_t n_group, int64_t topk_group, int64_t k,
                  std::vector<int32_t>* experts, std::vector<float>* weights) {
    experts->assign(k, -1);
    weights->assign(k, 0.0f);
    MoeRoutingParams p;
    p.logits = logits.data();
    p.T = 1;
    p.E = static_cast<int64_t>(logits.size());
    p.n_group = n_group;
    p.topk_group = topk_group;
    p.topk = k;
    p.out_experts = experts->data();
    p.out_weights = weights->data();
    MoeRoutingCpu(p);
  };
  std::vector<int32_t> e;
  std::vector<float> w;
  route({nan, 0.5f, nan, -1.0f, 2.0f, nan}, 1, 1, 3, &e, &w);
  EXPECT_EQ(e, (std::vector<int32_t>{4, 1, 3}));
  for (float v : w) EXPECT_TRUE(std::isfinite(v));
  route({nan, 0.5f, nan, nan, nan, nan}, 1, 1, 3, &e, &w);  // one finite expert, then NaNs by index
  EXPECT_EQ(e, (std::vector<int32_t>{1, 0, 2}));
  for (float v : w) EXPECT_TRUE(std::isnan(v));
  // A group whose best two are NaN rates -inf: group 1 (experts 2, 3) loses to group 2.
  route({3.0f, 2.0f, nan, nan, -4.0f, -5.0f}, 3, 2, 2, &e, &w);
  EXPECT_EQ(e, (std::vector<int32_t>{0, 1}));
  route({-3.0f, -2.0f, nan, 9.0f, -4.0f, -5.0f}, 3, 2, 3, &e, &w);  // group 1 = 9 + -inf: last
  EXPECT_EQ(e, (std::vector<int32_t>{1, 0, 4}));
}

}  // namespace
}  // namespace indexcache
