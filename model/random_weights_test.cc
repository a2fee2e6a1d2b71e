// Random weights for benchmarks: a pipeline stage's range only, and FP8 matrices over one shared
// pool of e4m3 bytes with the same scale as the fp32 ones (so activations keep their size).
#include "model/random_weights.h"

#include <cmath>

#include <gtest/gtest.h>

#include "kernels/fp8_dequant.h"
#include "model/dsa_model.h"

namespace indexcache {
namespace {

ModelConfig SmallMoeConfig() {
  const nlohmann::json config = {
      {"model_type", "deepseek_v32"}, {"vocab_size", 64},          {"hidden_size", 256},
      {"num_hidden_layers", 3},       {"num_attention_heads", 2},  {"q_lora_rank", 64},
      {"kv_lora_rank", 32},           {"qk_nope_head_dim", 16},    {"qk_rope_head_dim", 8},
      {"v_head_dim", 16},             {"index_topk", 8},           {"index_n_heads", 2},
      {"index_head_dim", 16},         {"intermediate_size", 96},   {"first_k_dense_replace", 1},
      {"n_routed_experts", 8},        {"moe_intermediate_size", 160}, {"num_experts_per_tok", 2},
      {"n_group", 2},                 {"topk_group", 1},           {"n_shared_experts", 1},
      {"rope_theta", 10000.0},        {"max_position_embeddings", 256},
  };
  auto parsed = ParseModelConfig(config, "test config");
  EXPECT_TRUE(parsed.ok()) << parsed.status().message();
  return *parsed;
}

double Std(const WeightMatrix& w) {
  if (w.fp8) {
    Fp8BlockLayout layout;
    layout.rows = w.fp8->rows;
    layout.cols = w.fp8->cols;
    layout.block_rows = w.fp8->block_rows;
    layout.block_cols = w.fp8->block_cols;
    std::vector<float> out(layout.rows * layout.cols);
    Fp8DequantCpu(static_cast<const uint8_t*>(w.fp8->data.raw()), w.fp8->scale_inv.data<float>(), layout, out.data());
    double s = 0;
    for (float v : out) s += double(v) * v;
    return std::sqrt(s / out.size());
  }
  return std::sqrt(w.squaredNorm() / double(w.size()));
}

TEST(RandomWeightsTest, StageRangeFillsOnlyItsLayers) {
  const ModelConfig c = SmallMoeConfig();
  RandomWeightsOptions opts;
  opts.range = {1, 2};
  const ModelWeights w = RandomModelWeights(c, 3, opts);
  EXPECT_FALSE(w.has_embedding());
  EXPECT_FALSE(w.has_head(c.num_layers));
  EXPECT_EQ(w.embed.size(), 0);
  EXPECT_FALSE(w.layers[0].loaded);
  EXPECT_TRUE(w.layers[1].loaded);
  EXPECT_FALSE(w.layers[2].loaded);
  EXPECT_EQ(w.layers[1].moe.experts.size(), 8u);
  // Another stage's layers say what they are (the pattern check needs their indexers).
  EXPECT_TRUE(w.layers[0].has_indexer);
  EXPECT_TRUE(w.layers[2].is_moe);
  auto backend = MakeBackend("cpu");
  ASSERT_TRUE(backend.ok());
  auto m = DsaModel::FromParts(c, RandomModelWeights(c, 3, opts), IndexPattern::AllFull(3), *backend);
  ASSERT_TRUE(m.ok()) << m.status().ToString();
}

TEST(RandomWeightsTest, AStagesLayersEqualTheWholeModels) {
  const ModelConfig c = SmallMoeConfig();
  const ModelWeights whole = RandomModelWeights(c, 4);
  RandomWeightsOptions opts;
  opts.range = {1, 3};
  const ModelWeights stage = RandomModelWeights(c, 4, opts);
  EXPECT_EQ(stage.layers[2].q_b, whole.layers[2].q_b);
  EXPECT_EQ(stage.layers[1].indexer.wq_b, whole.layers[1].indexer.wq_b);
  EXPECT_EQ(stage.layers[2].moe.router, whole.layers[2].moe.router);
  EXPECT_EQ(stage.lm_head, whole.lm_head);
  EXPECT_NE(whole.layers[1].q_b, whole.layers[2].q_b);
}

TEST(RandomWeightsTest, Fp8MatricesHaveTheFp32Scale) {
  const ModelConfig c = SmallMoeConfig();
  RandomWeightsOptions opts;
  opts.fp8 = true;
  const ModelWeights w = RandomModelWeights(c, 3, opts);
  const ModelWeights ref = RandomModelWeights(c, 3);
  const LayerWeights& L = w.layers[1];
  ASSERT_TRUE(L.q_b.fp8.has_value());
  ASSERT_TRUE(L.moe.experts[5].down.fp8.has_value());
  EXPECT_FALSE(w.lm_head.fp8.has_value());  // the LM head stays fp32 (small vocab)
  EXPECT_EQ(L.moe.experts[5].down.fp8->name, "model.layers.1.mlp.experts.5.down_proj.weight");
  for (auto [a, b] : {std::pair<const WeightMatrix*, const WeightMatrix*>{&L.q_b, &ref.layers[1].q_b},
                      {&L.o, &ref.layers[1].o},
                      {&L.moe.experts[5].down, &ref.layers[1].moe.experts[5].down},
                      {&w.layers[0].mlp.up, &ref.layers[0].mlp.up}}) {
    const double s = Std(*a), want = Std(*b);
    EXPECT_NEAR(s, want, 0.1 * want);
  }
}

TEST(RandomWeightsTest, Fp8ModelRunsFiniteOnTheCpuBackend) {
  const ModelConfig c = SmallMoeConfig();
  RandomWeightsOptions opts;
  opts.fp8 = true;
  auto backend = MakeBackend("cpu");
  ASSERT_TRUE(backend.ok());
  auto m = DsaModel::FromParts(c, RandomModelWeights(c, 9, opts), IndexPattern::AllFull(3), *backend);
  ASSERT_TRUE(m.ok()) << m.status().ToString();
  std::vector<int32_t> tokens(40);
  for (size_t i = 0; i < tokens.size(); ++i) tokens[i] = static_cast<int32_t>((i * 7) % 64);
  auto r = m->Forward(tokens);
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  for (int64_t i = 0; i < r->logits.numel(); ++i) ASSERT_TRUE(std::isfinite(r->logits.data<float>()[i]));
}

}  // namespace
}  // namespace indexcache
