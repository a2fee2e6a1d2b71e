#include "eval/topk_probe.h"

#include <algorithm>
#include <cmath>
#include <set>

#include <gtest/gtest.h>

#include "eval/evaluate.h"

namespace indexcache {
namespace {

const char kGentle[] = "tests/data/dsv32_gentle_bf16";  // 4 layers, top-k 32, every layer indexed

std::vector<int32_t> Tokens(int64_t n) {
  std::vector<int32_t> t(n);
  for (int64_t i = 0; i < n; ++i) t[i] = static_cast<int32_t>((i * 37 + 11) % 251);
  return t;
}

TEST(SampleQueries, EvenlySpreadOverEligiblePositions) {
  EXPECT_EQ(SampleQueries(10, 4, 0), (std::vector<int64_t>{4, 5, 6, 7, 8, 9}));
  EXPECT_EQ(SampleQueries(10, 4, 2), (std::vector<int64_t>{4, 9}));
  EXPECT_EQ(SampleQueries(10, 4, 1), (std::vector<int64_t>{9}));
  EXPECT_EQ(SampleQueries(8, 32, 5), (std::vector<int64_t>{7}));  // k >= T: the last query only
}

TEST(TopkOverlap, EqualsBruteForceFromCapturedTopk) {
  auto model = DsaModel::Load(kGentle);
  ASSERT_TRUE(model.ok()) << model.status().ToString();
  const IndexPattern all_f = AllFullWhereIndexed(*model);
  ASSERT_EQ(all_f.ToString(), "FFFF");
  const std::vector<int32_t> tokens = Tokens(80);
  const int64_t k = model->config().index_topk;

  // Brute force: every query with more than k valid keys, from the forward's own top-k trace.
  ForwardOptions opt;
  opt.pattern = &all_f;
  opt.trace.topk = true;
  auto traced = model->Forward(tokens, opt);
  ASSERT_TRUE(traced.ok());
  const int N = 4;
  std::vector<std::vector<double>> want(N, std::vector<double>(N, 0.0));
  int64_t counted = 0;
  for (int64_t t = k; t < 80; ++t) {
    ++counted;
    for (int a = 0; a < N; ++a) {
      for (int b = 0; b < N; ++b) {
        const int32_t* ra = traced->layers[a].topk.data<int32_t>() + t * k;
        const int32_t* rb = traced->layers[b].topk.data<int32_t>() + t * k;
        std::set<int32_t> sa(ra, ra + k);
        int common = 0;
        for (int64_t i = 0; i < k; ++i) common += sa.count(rb[i]) ? 1 : 0;
        want[a][b] += static_cast<double>(common) / k;
      }
    }
  }

  const std::vector<int64_t> queries = SampleQueries(80, k, 0);
  auto probes = ProbeLayers(*model, tokens, all_f, queries, false);
  ASSERT_TRUE(probes.ok()) << probes.status().ToString();
  TopkOverlap overlap(N);
  overlap.Add(*probes, queries);
  EXPECT_EQ(overlap.queries(), counted);
  const auto m = overlap.Matrix();
  double off_diagonal_below_one = 0;
  for (int a = 0; a < N; ++a) {
    EXPECT_DOUBLE_EQ(m[a][a], 1.0);
    for (int b = 0; b < N; ++b) {
      EXPECT_NEAR(m[a][b], want[a][b] / counted, 1e-12) << a << "," << b;
      EXPECT_DOUBLE_EQ(m[a][b], m[b][a]);
      EXPECT_GE(m[a][b], 0.0);
      EXPECT_LE(m[a][b], 1.0);
      if (a != b && m[a][b] < 1.0) off_diagonal_below_one += 1;
    }
  }
  EXPECT_GT(off_diagonal_below_one, 0) << "a random model's layers should not all pick the same keys";
}

TEST(TopkOverlap, NoEligibleQueryGivesNaN) {
  TopkOverlap overlap(2);
  std::vector<LayerProbe> probes(2);
  for (auto& p : probes) p.topk_rows = Tensor::Zeros(DType::kI32, {1, 8});
  overlap.Add(probes, {3});  // position 3 has 4 keys <= k = 8
  EXPECT_EQ(overlap.queries(), 0);
  EXPECT_TRUE(std::isnan(overlap.Matrix()[0][1]));
}

TEST(MassRecall, IsOneWhenTheTopkHoldsEveryKey) {
  auto model = DsaModel::Load(kGentle);
  ASSERT_TRUE(model.ok());
  const int64_t k = model->config().index_topk;
  const std::vector<int32_t> tokens = Tokens(k);  // T = k: every query selects every key
  const IndexPattern all_f = AllFullWhereIndexed(*model);
  auto probes = ProbeLayers(*model, tokens, all_f, SampleQueries(k, k, 0), true);
  ASSERT_TRUE(probes.ok()) << probes.status().ToString();
  for (const LayerProbe& p : *probes) EXPECT_NEAR(p.mass_recall, 1.0, 1e-6);
}

TEST(MassRecall, EqualsADenseSoftmaxOnTheHost) {
  auto model = DsaModel::Load(kGentle);
  ASSERT_TRUE(model.ok());
  const std::vector<int32_t> tokens = Tokens(90);
  auto pattern = IndexPattern::Parse("FSFS", 4);
  ASSERT_TRUE(pattern.ok());
  ForwardOptions opt;
  opt.pattern = &*pattern;
  opt.trace.topk = true;
  opt.trace.attention = true;
  auto r = model->Forward(tokens, opt);
  ASSERT_TRUE(r.ok());
  const std::vector<int64_t> queries = {40, 63, 89};
  auto probes = ProbeLayers(*model, tokens, *pattern, queries, true);
  ASSERT_TRUE(probes.ok());
  for (int l = 0; l < 4; ++l) {
    const LayerTrace& tr = r->layers[l];
    const int64_t H = tr.attn_q.size(1), D = tr.attn_q.size(2), k = tr.topk.size(1);
    double want = 0;
    for (int64_t t : queries) {
      std::set<int32_t> used(tr.topk.data<int32_t>() + t * k, tr.topk.data<int32_t>() + (t + 1) * k);
      double per_query = 0;
      for (int64_t h = 0; h < H; ++h) {
        std::vector<double> s(t + 1);
        for (int64_t j = 0; j <= t; ++j) {
          double dot = 0;
          for (int64_t d = 0; d < D; ++d) {
            dot += double(tr.attn_q.data<float>()[(t * H + h) * D + d]) * tr.attn_kv.data<float>()[j * D + d];
          }
          s[j] = dot * tr.attn_scale;
        }
        const double m = *std::max_element(s.begin(), s.end());
        double z = 0, on = 0;
        for (int64_t j = 0; j <= t; ++j) {
          z += std::exp(s[j] - m);
          if (used.count(static_cast<int32_t>(j))) on += std::exp(s[j] - m);
        }
        per_query += on / z / H;
      }
      want += per_query / queries.size();
    }
    EXPECT_NEAR((*probes)[l].mass_recall, want, 1e-5) << "layer " << l;
    EXPECT_GT((*probes)[l].mass_recall, 0.0);
    EXPECT_LT((*probes)[l].mass_recall, 1.0);
  }
}

}  // namespace
}  // namespace indexcache
