#include "eval/evaluate.h"

#include <gtest/gtest.h>

#include "core/test_util.h"
#include "data/eval_windows.h"
#include "data/megatron_dataset.h"
#include "data/token_array.h"

namespace indexcache {
namespace {

using json = nlohmann::json;

const char kGentle[] = "tests/data/dsv32_gentle_bf16";  // 4 layers, 96 tokens, top-k 32

NamedPattern Named(const std::string& spec) {
  auto p = IndexPattern::Parse(spec, 4);
  EXPECT_TRUE(p.ok());
  return {spec, *p};
}

class EvaluateTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto model = DsaModel::Load(kGentle);
    ASSERT_TRUE(model.ok()) << model.status().ToString();
    model_ = std::make_unique<DsaModel>(std::move(*model));
    auto windows = ReadEvalWindows(std::string(kGentle) + "/tokens.npy", 48, 0, 256);
    ASSERT_TRUE(windows.ok());
    windows_ = *windows;
  }
  std::unique_ptr<DsaModel> model_;
  std::vector<EvalWindow> windows_;
};

TEST_F(EvaluateTest, SeveralPatternsEqualSingleRuns) {
  EvalOptions opt;
  opt.bucket = 10;
  opt.overlap = true;
  opt.overlap_queries = 8;
  const std::vector<NamedPattern> all = {Named("all"), Named("1/2"), Named("FSSF")};
  auto together = EvaluatePatterns(*model_, windows_, all, opt);
  ASSERT_TRUE(together.ok()) << together.status().ToString();
  ASSERT_EQ((*together)["patterns"].size(), 3u);
  for (size_t i = 0; i < all.size(); ++i) {
    auto alone = EvaluatePatterns(*model_, windows_, {all[i]}, opt);
    ASSERT_TRUE(alone.ok());
    json a = (*alone)["patterns"][0], b = (*together)["patterns"][i];
    // Only the difference column depends on which pattern comes first.
    EXPECT_NEAR(b["difference"].get<double>(), b["loss"].get<double>() - (*together)["patterns"][0]["loss"].get<double>(), 1e-12);
    a.erase("difference");
    b.erase("difference");
    EXPECT_EQ(a, b) << all[i].name;
    EXPECT_EQ((*alone)["overlap"], (*together)["overlap"]);
  }
  EXPECT_EQ((*together)["patterns"][1]["pattern"], "FSFS");
  EXPECT_EQ((*together)["patterns"][0]["difference"], 0.0);
  EXPECT_EQ((*together)["sequences"], 2);
  EXPECT_EQ((*together)["predicted_tokens"], 94);
}

TEST_F(EvaluateTest, BucketsAverageBackToTheMean) {
  EvalOptions opt;
  opt.bucket = 7;
  auto r = EvaluatePatterns(*model_, windows_, {Named("FSSF")}, opt);
  ASSERT_TRUE(r.ok());
  const json& p = (*r)["patterns"][0];
  double weighted = 0;
  int64_t n = 0;
  for (const json& b : p["by_position"]) {
    weighted += b["loss"].get<double>() * b["count"].get<int64_t>();
    n += b["count"].get<int64_t>();
  }
  EXPECT_EQ(n, p["predicted_tokens"].get<int64_t>());
  EXPECT_NEAR(weighted / n, p["loss"].get<double>(), 1e-12);
  EXPECT_EQ(p["by_position"].size(), 7u);  // 47 predictions per window in buckets of 7
  EXPECT_EQ(p["by_position"][6]["count"], 10);
}

TEST_F(EvaluateTest, MegatronPrefixEqualsNpyOfTheSameTokens) {
  auto tokens = ReadTokenArray(std::string(kGentle) + "/tokens.npy", 256);
  ASSERT_TRUE(tokens.ok());
  const std::string prefix = MakeTempDir() + "/gentle_text_document";
  ASSERT_TRUE(WriteMegatronDataset(prefix, MegatronDType::kUInt16, {tokens->Row(0)}).ok());
  auto megatron = ReadEvalWindows(prefix, 48, 0, 256);
  ASSERT_TRUE(megatron.ok()) << megatron.status().ToString();
  EvalOptions opt;
  opt.bucket = 16;
  auto a = EvaluatePatterns(*model_, windows_, {Named("all"), Named("1/4")}, opt);
  auto b = EvaluatePatterns(*model_, *megatron, {Named("all"), Named("1/4")}, opt);
  ASSERT_TRUE(a.ok() && b.ok());
  EXPECT_EQ(*a, *b);
}

TEST_F(EvaluateTest, OverlapAndMassRecallShapes) {
  EvalOptions opt;
  opt.overlap = true;
  opt.overlap_queries = 0;
  auto r = EvaluatePatterns(*model_, windows_, {Named("all"), Named("1/4")}, opt);
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  const json& m = (*r)["overlap"];
  ASSERT_EQ(m.size(), 4u);
  for (size_t a = 0; a < 4; ++a) {
    ASSERT_EQ(m[a].size(), 4u);
    EXPECT_DOUBLE_EQ(m[a][a].get<double>(), 1.0);
    for (size_t b = 0; b < 4; ++b) EXPECT_DOUBLE_EQ(m[a][b].get<double>(), m[b][a].get<double>());
  }
  EXPECT_EQ((*r)["overlap_queries"], 2 * 16);  // positions 32..47 of both windows
  for (const json& p : (*r)["patterns"]) {
    ASSERT_EQ(p["mass_recall"].size(), 4u);
    for (const json& v : p["mass_recall"]) {
      EXPECT_GT(v.get<double>(), 0.0);
      EXPECT_LE(v.get<double>(), 1.0 + 1e-9);
    }
  }
  // Layer 0 is Full under both patterns: the same selection, the same recall.
  EXPECT_DOUBLE_EQ((*r)["patterns"][0]["mass_recall"][0].get<double>(), (*r)["patterns"][1]["mass_recall"][0].get<double>());
}

TEST_F(EvaluateTest, BadRequestsAreErrors) {
  EvalOptions opt;
  EXPECT_FALSE(EvaluatePatterns(*model_, windows_, {}, opt).ok());
  opt.overlap_queries = -1;
  EXPECT_FALSE(EvaluatePatterns(*model_, windows_, {Named("all")}, opt).ok());
}

}  // namespace
}  // namespace indexcache
