// FP8 checkpoints on the CPU (CI): the loader's Fp8Weights::kKeep form (views of the e4m3 bytes,
// no fp32 copy), placing that form (the CPU backend dequantises it, bit for bit what the load-time
// path computes), errors that name the tensor, and the model writer's FP8 storage that the GPU
// tests build their synthetic FP8 models with.
#include <algorithm>
#include <cmath>
#include <string>
#include <vector>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "core/dtype.h"
#include "core/safetensors.h"
#include "core/test_util.h"
#include "data/token_array.h"
#include "model/dsa_model.h"
#include "model/model_writer.h"
#include "model/random_weights.h"

namespace indexcache {
namespace {

// 3 layers (2 dense, 1 MoE with 4 experts + 1 shared), every matrix FP8 in blocks of 16 x 24
// (partial blocks everywhere), LM head f32.
const char kFp8[] = "tests/data/dsv32_yarn_fp8";

// The model as DsaModel::Load builds it, but with the FP8 handling chosen by the test.
StatusOr<DsaModel> LoadWith(const std::string& dir, std::shared_ptr<Backend> backend, Fp8Weights fp8) {
  ASSIGN_OR_RETURN(ModelConfig config, LoadModelConfig(dir));
  ASSIGN_OR_RETURN(SafetensorsCheckpoint ckpt, SafetensorsCheckpoint::Open(dir));
  std::vector<bool> indexer_layers(config.num_layers);
  for (int l = 0; l < config.num_layers; ++l) {
    indexer_layers[l] = ckpt.Has("model.layers." + std::to_string(l) + ".self_attn.indexer.wk.weight");
  }
  ASSIGN_OR_RETURN(ModelWeights weights, LoadModelWeights(config, ckpt, indexer_layers, {}, fp8));
  IndexPattern pattern = config.pattern;
  return DsaModel::FromParts(std::move(config), std::move(weights), std::move(pattern), std::move(backend));
}

TEST(Fp8WeightsTest, KeepLeavesTheCheckpointsFp8FormAndNoFloats) {
  auto config = LoadModelConfig(kFp8);
  auto ckpt = SafetensorsCheckpoint::Open(kFp8);
  ASSERT_TRUE(config.ok() && ckpt.ok());
  auto w = LoadModelWeights(*config, *ckpt, std::vector<bool>(3, true), {}, Fp8Weights::kKeep);
  ASSERT_TRUE(w.ok()) << w.status().ToString();
  const ModelWeights& mw = *w;
  const LayerWeights& L = mw.layers[0];
  EXPECT_EQ(L.q_a.size(), 0);  // no fp32 copy
  ASSERT_TRUE(L.q_a.fp8.has_value());
  EXPECT_EQ(L.q_a.fp8->name, "model.layers.0.self_attn.q_a_proj.weight");
  EXPECT_EQ(L.q_a.fp8->data.dtype(), DType::kF8E4M3);
  EXPECT_EQ(L.q_a.fp8->data.shape(), (Shape{32, 64}));
  EXPECT_EQ(L.q_a.fp8->scale_inv.shape(), (Shape{2, 3}));
  EXPECT_EQ(L.q_a.num_params(), 32 * 64);
  for (const WeightMatrix* m : {&L.q_b, &L.kv_a, &L.kv_b, &L.o, &L.mlp.gate, &L.mlp.up, &L.mlp.down,
                                &mw.layers[2].moe.experts[3].down, &mw.layers[2].moe.shared.gate}) {
    EXPECT_TRUE(m->fp8.has_value() && m->size() == 0);
  }
  // The indexer stays fp32 (the trainer's masters start from it); the f32 LM head is a Matrix.
  EXPECT_EQ(L.indexer.wq_b.size(), 256 * 32);
  EXPECT_FALSE(mw.lm_head.fp8.has_value());
  EXPECT_EQ(mw.lm_head.size(), 256 * 64);
}

TEST(Fp8WeightsTest, PlacingTheKeptFormOnTheCpuGivesTheLoadTimeLogitsBitForBit) {
  auto at_load = DsaModel::Load(kFp8);
  auto kept = LoadWith(kFp8, MakeCpuBackend(), Fp8Weights::kKeep);
  ASSERT_TRUE(at_load.ok()) << at_load.status().ToString();
  ASSERT_TRUE(kept.ok()) << kept.status().ToString();
  EXPECT_EQ(kept->ParameterCount(), at_load->ParameterCount());
  // The views are released once placed; the shape stays for the parameter count.
  ASSERT_TRUE(kept->weights().layers[1].o.fp8.has_value());
  EXPECT_TRUE(kept->weights().layers[1].o.fp8->data.empty());
  EXPECT_EQ(kept->ResidentBytes().total(), at_load->ResidentBytes().total());
  auto tokens = ReadTokenArray(std::string(kFp8) + "/tokens.npy", at_load->config().vocab_size);
  ASSERT_TRUE(tokens.ok());
  auto want = at_load->Forward(tokens->Row(0));
  auto got = kept->Forward(tokens->Row(0));
  ASSERT_TRUE(want.ok() && got.ok());
  ASSERT_EQ(want->logits.shape(), got->logits.shape());
  int64_t differ = 0;
  for (int64_t i = 0; i < want->logits.numel(); ++i) {
    differ += want->logits.data<float>()[i] != got->logits.data<float>()[i];
  }
  EXPECT_EQ(differ, 0);
}

// A one-tensor checkpoint: `name` as F8_E4M3 [4, 6] and its scales with `scale_shape`.
std::string WriteOneFp8Tensor(const std::string& name, const Shape& scale_shape, bool with_scale = true) {
  const std::string dir = MakeTempDir("fp8");
  NamedTensors t = {{name, Tensor::Zeros(DType::kF8E4M3, {4, 6})}};
  if (with_scale) t.push_back({name + "_scale_inv", Tensor::Zeros(DType::kF32, scale_shape)});
  EXPECT_TRUE(WriteSafetensors(dir + "/model.safetensors", t).ok());
  return dir;
}

TEST(Fp8WeightsTest, LoadErrorsNameTheShardAndTheTensor) {
  QuantConfig quant;
  quant.fp8 = true;
  quant.block_rows = 2;
  quant.block_cols = 4;  // scales [2, 2]
  const std::string name = "model.layers.0.self_attn.o_proj.weight";
  for (Fp8Weights mode : {Fp8Weights::kKeep, Fp8Weights::kDequantize}) {
    auto ckpt = SafetensorsCheckpoint::Open(WriteOneFp8Tensor(name, {2, 2}));
    ASSERT_TRUE(ckpt.ok());
    auto ok = LoadWeightMatrix(*ckpt, name, 4, 6, quant, mode);
    ASSERT_TRUE(ok.ok()) << ok.status().ToString();
    EXPECT_EQ(ok->fp8.has_value(), mode == Fp8Weights::kKeep);

    auto bad_scale = SafetensorsCheckpoint::Open(WriteOneFp8Tensor(name, {2, 3}));
    auto e1 = LoadWeightMatrix(*bad_scale, name, 4, 6, quant, mode);
    ASSERT_FALSE(e1.ok());
    EXPECT_NE(e1.status().message().find("model.safetensors: tensor '" + name + "_scale_inv' has shape [2, 3], "
                                         "expected [2, 2]"),
              std::string::npos)
        << e1.status().message();
    auto no_scale = SafetensorsCheckpoint::Open(WriteOneFp8Tensor(name, {}, /*with_scale=*/false));
    auto e2 = LoadWeightMatrix(*no_scale, name, 4, 6, quant, mode);
    ASSERT_FALSE(e2.ok());
    EXPECT_NE(e2.status().message().find("'" + name + "' is F8_E4M3 but"), std::string::npos);
    auto e3 = LoadWeightMatrix(*ckpt, name, 6, 4, quant, mode);
    ASSERT_FALSE(e3.ok());
    EXPECT_NE(e3.status().message().find(name), std::string::npos);
  }
}

TEST(Fp8WeightsTest, BackendWeightFp8ChecksBeforeReading) {
  auto cpu = MakeCpuBackend();
  const Tensor q = Tensor::Zeros(DType::kF8E4M3, {4, 6});
  auto ok = cpu->WeightFp8("w", q, Tensor::Zeros(DType::kF32, {2, 2}), 2, 4);
  ASSERT_TRUE(ok.ok()) << ok.status().ToString();
  EXPECT_FALSE(ok->is_fp8());  // the CPU keeps f32
  EXPECT_EQ(ok->shape(), (Shape{4, 6}));
  auto wrong_grid = cpu->WeightFp8("model.x.weight", q, Tensor::Zeros(DType::kF32, {2, 3}), 2, 4);
  ASSERT_FALSE(wrong_grid.ok());
  EXPECT_NE(wrong_grid.status().message().find("tensor 'model.x.weight'"), std::string::npos);
  auto not_fp8 = cpu->WeightFp8("model.x.weight", Tensor::Zeros(DType::kBF16, {4, 6}),
                                Tensor::Zeros(DType::kF32, {2, 2}), 2, 4);
  ASSERT_FALSE(not_fp8.ok());
  EXPECT_NE(not_fp8.status().message().find("BF16"), std::string::npos);
  auto bf16_scales = cpu->WeightFp8("model.x.weight", q, Tensor::Zeros(DType::kBF16, {2, 2}), 2, 4);
  EXPECT_FALSE(bf16_scales.ok());
}

// The writer's FP8 storage: every quantised matrix reloads as e4m3(v / s) * s with s = block amax
// / 448 (FloatToFp8E4M3's rounding), within e4m3's precision of the original.
TEST(Fp8WeightsTest, ModelWriterStoresFp8LikeTheRelease) {
  const nlohmann::json config = {
      {"model_type", "deepseek_v32"}, {"vocab_size", 64},          {"hidden_size", 48},
      {"num_hidden_layers", 2},       {"num_attention_heads", 2},  {"q_lora_rank", 16},
      {"kv_lora_rank", 16},           {"qk_nope_head_dim", 8},     {"qk_rope_head_dim", 8},
      {"v_head_dim", 8},              {"index_topk", 8},           {"index_n_heads", 2},
      {"index_head_dim", 16},         {"intermediate_size", 40},   {"first_k_dense_replace", 1},
      {"n_routed_experts", 4},        {"moe_intermediate_size", 24}, {"num_experts_per_tok", 2},
      {"n_shared_experts", 1},        {"rope_theta", 10000.0},     {"max_position_embeddings", 256},
      {"tie_word_embeddings", false},
      {"quantization_config", {{"quant_method", "fp8"}, {"fmt", "e4m3"}, {"weight_block_size", {16, 24}}}},
  };
  auto parsed = ParseModelConfig(config, "test config");
  ASSERT_TRUE(parsed.ok()) << parsed.status().message();
  const ModelWeights original = RandomModelWeights(*parsed, 7);
  const std::string dir = MakeTempDir("fp8_model");
  Fp8Storage fp8;
  fp8.enabled = true;
  fp8.block_rows = 16;
  fp8.block_cols = 24;
  fp8.lm_head = true;
  ASSERT_TRUE(WriteModelDirectory(dir, config, original, fp8).ok());
  auto ckpt = SafetensorsCheckpoint::Open(dir);
  ASSERT_TRUE(ckpt.ok());
  for (const char* name :
       {"lm_head.weight", "model.layers.0.self_attn.q_a_proj.weight", "model.layers.0.self_attn.indexer.wq_b.weight",
        "model.layers.1.mlp.experts.2.up_proj.weight", "model.layers.1.mlp.shared_experts.down_proj.weight"}) {
    auto t = ckpt->Get(name);
    ASSERT_TRUE(t.ok()) << name;
    EXPECT_EQ(t->dtype(), DType::kF8E4M3) << name;
    EXPECT_TRUE(ckpt->Has(std::string(name) + "_scale_inv")) << name;
  }
  EXPECT_EQ(ckpt->Get("model.layers.0.self_attn.indexer.weights_proj.weight")->dtype(), DType::kF32);
  EXPECT_EQ(ckpt->Get("model.layers.1.mlp.gate.weight")->dtype(), DType::kF32);

  auto model = DsaModel::Load(dir);
  ASSERT_TRUE(model.ok()) << model.status().ToString();
  // Exact values for one matrix, q_a [16, 48]: blocks of 16 x 24 -> two blocks.
  const Matrix& want = original.layers[0].q_a;
  const Matrix& got = model->weights().layers[0].q_a;
  for (int64_t bc = 0; bc < 2; ++bc) {
    float amax = 0;
    for (int64_t r = 0; r < 16; ++r) {
      for (int64_t c = bc * 24; c < bc * 24 + 24; ++c) amax = std::max(amax, std::fabs(want(r, c)));
    }
    const float s = amax / 448.0f;
    for (int64_t r = 0; r < 16; ++r) {
      for (int64_t c = bc * 24; c < bc * 24 + 24; ++c) {
        ASSERT_EQ(got(r, c), Fp8E4M3ToFloat(FloatToFp8E4M3(want(r, c) / s)) * s) << r << ", " << c;
      }
    }
  }
  // Whole matrices within e4m3's precision (3 mantissa bits: about 2-3 % relative RMS).
  auto rel = [](const Matrix& a, const Matrix& b) { return (a - b).norm() / b.norm(); };
  EXPECT_LT(rel(model->weights().lm_head, original.lm_head), 0.05);
  EXPECT_LT(rel(model->weights().layers[1].moe.experts[2].up, original.layers[1].moe.experts[2].up), 0.05);
  EXPECT_LT(rel(model->weights().layers[0].indexer.wk, original.layers[0].indexer.wk), 0.05);
}

}  // namespace
}  // namespace indexcache
