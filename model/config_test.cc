// Tests for ModelConfig parsing (model/config.cc) on config.json objects built here: both rope
// forms, yarn's attention factor and softmax scale (numbers computed here by hand), dense/MoE layer
// layout, FP8 quantization config, per-model-type defaults, and errors that name the field.
#include "model/config.h"

#include <cmath>
#include <string>
#include <vector>

#include "gtest/gtest.h"

namespace indexcache {
namespace {

using json = nlohmann::json;

const char kSrc[] = "m/config.json";

// A small but complete deepseek_v32 config: 5 layers, first 2 dense.
json Base() {
  return json{
      {"model_type", "deepseek_v32"},
      {"vocab_size", 1000},
      {"hidden_size", 256},
      {"num_hidden_layers", 5},
      {"num_attention_heads", 4},
      {"q_lora_rank", 96},
      {"kv_lora_rank", 64},
      {"qk_nope_head_dim", 32},
      {"qk_rope_head_dim", 16},
      {"v_head_dim", 32},
      {"index_topk", 33},
      {"index_head_dim", 24},
      {"intermediate_size", 512},
      {"moe_intermediate_size", 128},
      {"n_routed_experts", 16},
      {"n_shared_experts", 1},
      {"num_experts_per_tok", 4},
      {"n_group", 4},
      {"topk_group", 2},
      {"routed_scaling_factor", 2.5},
      {"first_k_dense_replace", 2},
      {"max_position_embeddings", 163840},
      {"rope_theta", 10000},
  };
}

// Base() with some fields replaced.
json With(const json& patch) {
  json j = Base();
  j.update(patch);
  return j;
}

// yarn_get_mscale(s, m) = 0.1 * m * ln(s) + 1 for s > 1.
double Mscale(double s, double m) { return s <= 1 ? 1.0 : 0.1 * m * std::log(s) + 1.0; }

ModelConfig ParseOk(const json& j) {
  auto c = ParseModelConfig(j, kSrc);
  EXPECT_TRUE(c.ok()) << c.status().ToString();
  if (!c.ok()) return ModelConfig();
  return *c;
}

void ExpectError(const json& j, const std::vector<std::string>& needles) {
  auto c = ParseModelConfig(j, kSrc);
  ASSERT_FALSE(c.ok()) << j.dump();
  const std::string& m = c.status().message();
  EXPECT_NE(m.find(kSrc), std::string::npos) << m;
  for (const std::string& n : needles) EXPECT_NE(m.find(n), std::string::npos) << "'" << m << "' lacks '" << n << "'";
}

TEST(ConfigTest, BasicFieldsAndDeepseekDefaults) {
  const ModelConfig c = ParseOk(Base());
  EXPECT_EQ(c.model_type, ModelType::kDeepseekV32);
  EXPECT_EQ(c.source, kSrc);
  EXPECT_EQ(c.hidden_size, 256);
  EXPECT_EQ(c.num_layers, 5);
  EXPECT_EQ(c.qk_head_dim(), 48);
  EXPECT_EQ(c.latent_dim(), 80);
  EXPECT_EQ(c.n_routed_experts, 16);
  EXPECT_EQ(c.n_group, 4);
  EXPECT_EQ(c.topk_group, 2);
  EXPECT_DOUBLE_EQ(c.routed_scaling_factor, 2.5);
  EXPECT_TRUE(c.norm_topk_prob);
  EXPECT_EQ(c.layer_is_moe, (std::vector<bool>{false, false, true, true, true}));
  // deepseek_v32 defaults.
  EXPECT_DOUBLE_EQ(c.rms_norm_eps, 1e-6);
  EXPECT_EQ(c.index_n_heads, 64);
  EXPECT_FALSE(c.indexer_rope_interleave);
  EXPECT_FALSE(c.quant.fp8);
  EXPECT_EQ(c.pattern.ToString(), "FFFFF");
  // Default rope: theta from the top level, no scaling, plain softmax scale.
  EXPECT_EQ(c.rope.type, RopeType::kDefault);
  EXPECT_DOUBLE_EQ(c.rope.theta, 10000.0);
  EXPECT_DOUBLE_EQ(c.rope.attention_factor, 1.0);
  EXPECT_NEAR(c.softmax_scale(), 1.0 / std::sqrt(48.0), 1e-15);
}

TEST(ConfigTest, GlmDefaults) {
  json j = Base();
  j["model_type"] = "glm_moe_dsa";
  const ModelConfig c = ParseOk(j);
  EXPECT_EQ(c.model_type, ModelType::kGlmMoeDsa);
  EXPECT_DOUBLE_EQ(c.rms_norm_eps, 1e-5);
  EXPECT_EQ(c.index_n_heads, 32);
  EXPECT_TRUE(c.indexer_rope_interleave);
  // Explicit values win over the defaults.
  j["rms_norm_eps"] = 3e-6;
  j["index_n_heads"] = 8;
  j["indexer_rope_interleave"] = false;
  const ModelConfig e = ParseOk(j);
  EXPECT_DOUBLE_EQ(e.rms_norm_eps, 3e-6);
  EXPECT_EQ(e.index_n_heads, 8);
  EXPECT_FALSE(e.indexer_rope_interleave);
}

TEST(ConfigTest, RopeScalingTopLevelForm) {
  // Released checkpoints: rope_theta + rope_scaling with the old "type" key.
  json j = Base();
  j["rope_scaling"] = {{"type", "yarn"},           {"factor", 40},          {"original_max_position_embeddings", 4096},
                       {"beta_fast", 32},          {"beta_slow", 1},        {"mscale", 1.0},
                       {"mscale_all_dim", 1.0}};
  const ModelConfig c = ParseOk(j);
  EXPECT_EQ(c.rope.type, RopeType::kYarn);
  EXPECT_DOUBLE_EQ(c.rope.theta, 10000.0);
  EXPECT_DOUBLE_EQ(c.rope.factor, 40.0);
  EXPECT_EQ(c.rope.original_max_position_embeddings, 4096);
  // mscale == mscale_all_dim: attention factor 1; softmax scale 48^-0.5 * (0.1 ln 40 + 1)^2.
  EXPECT_NEAR(c.rope.attention_factor, 1.0, 1e-12);
  const double m = 0.1 * std::log(40.0) + 1.0;  // 1.36889
  EXPECT_NEAR(m, 1.368888, 1e-6);
  EXPECT_NEAR(c.softmax_scale(), m * m / std::sqrt(48.0), 1e-12);
}

TEST(ConfigTest, RopeParametersForm) {
  // transformers >= 5: rope_parameters with rope_theta inside; the top-level rope_theta is ignored.
  json j = Base();
  j["rope_theta"] = 1.0;
  j["rope_parameters"] = {{"rope_type", "yarn"}, {"rope_theta", 50000.0}, {"factor", 8.0},
                          {"original_max_position_embeddings", 8192}, {"mscale", 1.0}, {"mscale_all_dim", 0.5}};
  const ModelConfig c = ParseOk(j);
  EXPECT_EQ(c.rope.type, RopeType::kYarn);
  EXPECT_DOUBLE_EQ(c.rope.theta, 50000.0);
  EXPECT_DOUBLE_EQ(c.rope.beta_fast, 32.0);
  EXPECT_DOUBLE_EQ(c.rope.beta_slow, 1.0);
  EXPECT_TRUE(c.rope.truncate);
  // attention_factor = mscale(8, 1) / mscale(8, 0.5) = (0.1 ln 8 + 1) / (0.05 ln 8 + 1).
  const double l8 = std::log(8.0);
  EXPECT_NEAR(c.rope.attention_factor, (0.1 * l8 + 1) / (0.05 * l8 + 1), 1e-12);
  EXPECT_NEAR(c.rope.attention_factor, 1.20794 / 1.10397, 1e-5);  // 1.09418
  // softmax scale uses mscale_all_dim only: 48^-0.5 * (0.05 ln 8 + 1)^2.
  EXPECT_NEAR(c.softmax_scale(), std::pow(0.05 * l8 + 1, 2) / std::sqrt(48.0), 1e-12);

  // Default rope in the new form.
  j["rope_parameters"] = {{"rope_type", "default"}, {"rope_theta", 1e6}};
  const ModelConfig d = ParseOk(j);
  EXPECT_EQ(d.rope.type, RopeType::kDefault);
  EXPECT_DOUBLE_EQ(d.rope.theta, 1e6);
  EXPECT_NEAR(d.softmax_scale(), 1.0 / std::sqrt(48.0), 1e-15);
}

TEST(ConfigTest, YarnAttentionFactorVariants) {
  json j = Base();
  // No mscale keys: attention_factor = mscale(factor, 1) = 0.1 ln 4 + 1; softmax scale unscaled.
  j["rope_scaling"] = {{"type", "yarn"}, {"factor", 4}, {"original_max_position_embeddings", 4096}};
  ModelConfig c = ParseOk(j);
  EXPECT_NEAR(c.rope.attention_factor, 0.1 * std::log(4.0) + 1, 1e-12);
  EXPECT_NEAR(c.softmax_scale(), 1.0 / std::sqrt(48.0), 1e-15);
  // Explicit attention_factor wins.
  j["rope_scaling"]["attention_factor"] = 0.75;
  c = ParseOk(j);
  EXPECT_DOUBLE_EQ(c.rope.attention_factor, 0.75);
  // factor <= 1: mscale is 1.
  j["rope_scaling"] = {{"type", "yarn"}, {"factor", 1.0}, {"original_max_position_embeddings", 4096},
                       {"mscale_all_dim", 1.0}};
  c = ParseOk(j);
  EXPECT_DOUBLE_EQ(c.rope.attention_factor, 1.0);
  EXPECT_NEAR(c.softmax_scale(), 1.0 / std::sqrt(48.0), 1e-15);
  // Missing factor: max_position_embeddings / original (163840 / 4096 = 40).
  j["rope_scaling"] = {{"rope_type", "yarn"}, {"original_max_position_embeddings", 4096}};
  c = ParseOk(j);
  EXPECT_DOUBLE_EQ(c.rope.factor, 40.0);
  EXPECT_NEAR(c.rope.attention_factor, Mscale(40, 1), 1e-12);
}

TEST(ConfigTest, MlpLayerTypesWinOverFirstKDense) {
  json j = Base();
  j["mlp_layer_types"] = {"dense", "sparse", "dense", "sparse", "sparse"};
  EXPECT_EQ(ParseOk(j).layer_is_moe, (std::vector<bool>{false, true, false, true, true}));
  j.erase("mlp_layer_types");
  j["first_k_dense_replace"] = 0;
  EXPECT_EQ(ParseOk(j).layer_is_moe, (std::vector<bool>(5, true)));
  // All dense: no MoE fields needed.
  json dense = Base();
  for (const char* k : {"moe_intermediate_size", "n_routed_experts", "num_experts_per_tok", "n_group", "topk_group"}) dense.erase(k);
  const ModelConfig d = ParseOk(dense);
  EXPECT_EQ(d.layer_is_moe, (std::vector<bool>(5, false)));
  ExpectError(With({{"mlp_layer_types", {"dense", "sparse"}}}), {"mlp_layer_types"});
  ExpectError(With({{"mlp_layer_types", {"dense", "moe", "dense", "dense", "dense"}}}), {"mlp_layer_types"});
}

TEST(ConfigTest, QuantizationConfig) {
  json j = Base();
  j["quantization_config"] = {{"quant_method", "fp8"}, {"fmt", "e4m3"}, {"weight_block_size", {128, 64}}};
  const ModelConfig c = ParseOk(j);
  EXPECT_TRUE(c.quant.fp8);
  EXPECT_EQ(c.quant.block_rows, 128);
  EXPECT_EQ(c.quant.block_cols, 64);
  j["quantization_config"] = {{"quant_method", "fp8"}};
  const ModelConfig d = ParseOk(j);
  EXPECT_TRUE(d.quant.fp8);
  EXPECT_EQ(d.quant.block_rows, 128);
  EXPECT_EQ(d.quant.block_cols, 128);
  j["quantization_config"] = {{"quant_method", "gptq"}};
  ExpectError(j, {"quantization_config.quant_method", "gptq"});
  j["quantization_config"] = {{"quant_method", "fp8"}, {"weight_block_size", {128, 0}}};
  ExpectError(j, {"quantization_config.weight_block_size"});
}

TEST(ConfigTest, PatternKeys) {
  json j = Base();
  j["index_topk_freq"] = 2;
  j["index_skip_topk_offset"] = 1;
  EXPECT_EQ(ParseOk(j).pattern.ToString(), "FSFSF");
  j["indexer_types"] = {"full", "full", "shared", "full", "shared"};
  EXPECT_EQ(ParseOk(j).pattern.ToString(), "FFSFS");
  j["indexer_types"] = {"full", "shared"};
  ExpectError(j, {"indexer_types"});
  j.erase("indexer_types");
  j["index_topk_pattern"] = "FSSXF";
  ExpectError(j, {"index_topk_pattern"});
  j.erase("index_topk_pattern");
  j["index_topk_freq"] = -2;
  ExpectError(j, {"index_topk_freq"});
}

TEST(ConfigTest, ErrorsNameTheField) {
  ExpectError(With({{"model_type", "llama"}}), {"model_type", "llama"});
  json no_type = Base();
  no_type.erase("model_type");
  ExpectError(no_type, {"model_type"});
  json no_hidden = Base();
  no_hidden.erase("hidden_size");
  ExpectError(no_hidden, {"hidden_size", "missing"});
  ExpectError(With({{"hidden_size", -256}}), {"hidden_size", "-256"});
  ExpectError(With({{"hidden_size", 0}}), {"hidden_size"});
  ExpectError(With({{"hidden_size", 256.5}}), {"hidden_size", "integer"});
  ExpectError(With({{"num_hidden_layers", "5"}}), {"num_hidden_layers", "integer"});
  ExpectError(With({{"qk_rope_head_dim", 15}}), {"qk_rope_head_dim"});
  ExpectError(With({{"rms_norm_eps", "small"}}), {"rms_norm_eps"});
  ExpectError(With({{"rope_scaling", {{"type", "linear"}, {"factor", 2}}}}), {"rope_scaling", "linear"});
  ExpectError(With({{"rope_parameters", {{"rope_type", "dynamic"}}}}), {"rope_parameters", "dynamic"});
  ExpectError(With({{"rope_scaling", {{"type", "yarn"}, {"factor", "big"}}}}), {"rope_scaling.factor"});
  ExpectError(With({{"rope_theta", -1}}), {"rope_theta"});
  ExpectError(With({{"n_group", 3}}), {"n_group"});  // 3 does not divide 16
  ExpectError(With({{"topk_group", 5}}), {"topk_group"});
  ExpectError(With({{"num_experts_per_tok", 9}}), {"num_experts_per_tok"});
  ExpectError(With({{"num_key_value_heads", 1}}), {"num_key_value_heads"});
  json no_moe_size = Base();
  no_moe_size.erase("moe_intermediate_size");
  ExpectError(no_moe_size, {"moe_intermediate_size"});
  EXPECT_FALSE(ParseModelConfig(json::array(), kSrc).ok());
}

// Issue 12: sizes of unbounded magnitude crashed the binary (heap overflows from wrapped
// products) or were truncated by casts (num_hidden_layers 2^32 + 3 ran as 3 layers). Every size
// is bounded at load, and the error names the field.
TEST(ConfigTest, SizesAreBounded) {
  ExpectError(With({{"index_topk", int64_t{1} << 62}}), {"index_topk", "4611686018427387904"});
  ExpectError(With({{"num_hidden_layers", (int64_t{1} << 32) + 3}}), {"num_hidden_layers"});
  ExpectError(With({{"num_hidden_layers", int64_t{1000000000000}}}), {"num_hidden_layers"});
  ExpectError(With({{"vocab_size", 18446744073709551615ull}}), {"vocab_size"});
  ExpectError(With({{"hidden_size", int64_t{1} << 40}}), {"hidden_size"});
  ExpectError(With({{"num_attention_heads", 1 << 20}}), {"num_attention_heads"});
  ExpectError(With({{"n_routed_experts", int64_t{1} << 33}}), {"n_routed_experts"});
  ExpectError(With({{"max_position_embeddings", int64_t{1} << 40}}), {"max_position_embeddings"});
  ExpectError(With({{"index_n_heads", 100000}}), {"index_n_heads"});
}

// Issue 12: nlohmann exceptions escaped (`quant_method: 5` aborted with type_error.302), and a
// deeply nested value overflowed the stack while the message was built.
TEST(ConfigTest, WrongJsonTypesAreErrorsNotExceptions) {
  ExpectError(With({{"quantization_config", {{"quant_method", 5}}}}), {"quantization_config.quant_method", "string"});
  ExpectError(With({{"quantization_config", {{"quant_method", "fp8"}, {"fmt", 3}}}}), {"quantization_config.fmt"});
  ExpectError(With({{"quantization_config", 7}}), {"quantization_config"});
  ExpectError(With({{"hidden_act", json::array({1})}}), {"hidden_act"});
  ExpectError(With({{"model_type", 3}}), {"model_type"});
  ExpectError(With({{"mlp_layer_types", {"dense", 4, "dense", "dense", "dense"}}}), {"mlp_layer_types"});
  const std::string deep = std::string(300000, '[') + std::string(300000, ']');
  json j = Base();
  j["hidden_size"] = json::parse(deep);
  auto c = ParseModelConfig(j, kSrc);
  ASSERT_FALSE(c.ok());
  EXPECT_LT(c.status().message().size(), 200u) << "the bad value must not be echoed in full";
  // Built by parsing: copying a deep value (as an initializer list would) recurses too.
  json j2 = json::parse("{\"indexer_types\": [" + deep + ", \"shared\", \"shared\", \"shared\", \"shared\"]}");
  j2.update(Base());
  c = ParseModelConfig(j2, kSrc);
  ASSERT_FALSE(c.ok());
  EXPECT_LT(c.status().message().size(), 200u);
}

// Issue 12: lenient rope parsing. A non-string rope_type silently meant default rope, and yarn's
// factor could be negative.
TEST(ConfigTest, RopeFieldsAreStrict) {
  ExpectError(With({{"rope_scaling", {{"rope_type", 5}, {"factor", 2}}}}), {"rope_scaling.rope_type", "string"});
  ExpectError(With({{"rope_parameters", {{"rope_type", json::array({"yarn"})}}}}), {"rope_parameters.rope_type"});
  ExpectError(With({{"rope_scaling", {{"type", "yarn"}, {"factor", -1}, {"original_max_position_embeddings", 4096}}}}),
              {"rope_scaling.factor", "positive"});
  ExpectError(With({{"rope_scaling", {{"type", "yarn"}, {"factor", 0}, {"original_max_position_embeddings", 4096}}}}),
              {"rope_scaling.factor"});
  ExpectError(With({{"rope_scaling", {{"type", "yarn"}, {"factor", 4}, {"original_max_position_embeddings", -5}}}}),
              {"rope_scaling.original_max_position_embeddings"});
  ExpectError(With({{"rope_scaling", {{"type", "yarn"}, {"factor", 4}, {"truncate", "no"}}}}), {"rope_scaling.truncate"});
}

}  // namespace
}  // namespace indexcache
