// The weight inventory derived from config.json alone against real checkpoints: on every fixture
// it names exactly the tensors the safetensors hold, with their shapes, and marks as FP8 exactly
// those stored as e4m3; on the shipped configs of DeepSeek-V3.2 and GLM-5 it gives their published
// parameter counts. (The fixtures written by transformers 5 fuse the routed experts; their
// element count is checked through the total.)
#include "parallel/weight_inventory.h"

#include <map>

#include <gtest/gtest.h>

#include "core/safetensors.h"
#include "parallel/layer_flops.h"

namespace indexcache {
namespace {

// name -> (rows, cols, fp8) with experts expanded.
std::map<std::string, std::tuple<int64_t, int64_t, bool>> Expand(const WeightInventory& inv) {
  std::map<std::string, std::tuple<int64_t, int64_t, bool>> out;
  auto add = [&](const WeightGroup& g) {
    for (const WeightTensor& t : g.tensors) {
      if (t.copies == 1) {
        out[t.name] = {t.rows, t.cols, t.fp8};
        continue;
      }
      const size_t at = t.name.find("experts.0.");
      ASSERT_NE(at, std::string::npos) << t.name;
      for (int64_t e = 0; e < t.copies; ++e) {
        out[t.name.substr(0, at) + "experts." + std::to_string(e) + "." + t.name.substr(at + 10)] = {t.rows, t.cols, t.fp8};
      }
    }
  };
  add(inv.embedding);
  for (const WeightGroup& g : inv.layers) add(g);
  add(inv.head);
  return out;
}

class FixtureInventoryTest : public ::testing::TestWithParam<const char*> {};

TEST_P(FixtureInventoryTest, NamesExactlyTheCheckpointsTensors) {
  const std::string dir = std::string("tests/data/") + GetParam();
  auto config = LoadModelConfig(dir);
  ASSERT_TRUE(config.ok()) << config.status().message();
  auto inv = InventoryFromConfig(*config);
  ASSERT_TRUE(inv.ok()) << inv.status().message();
  auto ckpt = SafetensorsCheckpoint::Open(dir);
  ASSERT_TRUE(ckpt.ok()) << ckpt.status().message();
  const auto expected = Expand(*inv);
  int64_t params = 0;
  size_t weights = 0;
  bool fused_experts = false;
  for (const std::string& name : ckpt->names()) {
    auto t = ckpt->Get(name);
    ASSERT_TRUE(t.ok());
    if (name.size() > 10 && name.compare(name.size() - 10, 10, "_scale_inv") == 0) continue;
    params += t->numel();
    // transformers 5 writes routed experts fused ([E, 2I, H] and [E, H, I]); releases per expert.
    // Those are checked through the parameter total below.
    if (name.find("mlp.experts.gate_up_proj") != std::string::npos ||
        name.find("mlp.experts.down_proj") != std::string::npos) {
      fused_experts = true;
      continue;
    }
    ++weights;
    auto it = expected.find(name);
    ASSERT_NE(it, expected.end()) << "inventory lacks " << name;
    const auto& [rows, cols, fp8] = it->second;
    const auto& shape = t->shape();
    EXPECT_EQ(shape[0], rows) << name;
    EXPECT_EQ(shape.size() == 2 ? shape[1] : 1, cols) << name;
    EXPECT_EQ(config->quant.fp8 && fp8, t->dtype() == DType::kF8E4M3) << name;
    if (config->quant.fp8 && fp8) EXPECT_TRUE(ckpt->Has(name + "_scale_inv")) << name;
  }
  if (!fused_experts) EXPECT_EQ(weights, expected.size());
  EXPECT_EQ(params, inv->parameters());
}

INSTANTIATE_TEST_SUITE_P(Fixtures, FixtureInventoryTest,
                         ::testing::Values("dsv32_gentle_bf16", "dsv32_moe_groups", "dsv32_yarn_fp8", "glm_shared_bf16"));

TEST(ShippedConfigs, DeepSeekV32HasItsPublishedSize) {
  auto config = LoadModelConfig("configs/models/deepseek_v32");
  ASSERT_TRUE(config.ok()) << config.status().message();
  EXPECT_EQ(config->num_layers, 61);
  EXPECT_TRUE(config->quant.fp8);
  auto inv = InventoryFromConfig(*config);
  ASSERT_TRUE(inv.ok());
  // ~671.9B without the MTP block; each MoE layer ~11.3B.
  EXPECT_NEAR(inv->parameters() / 1e9, 671.9, 0.5);
  EXPECT_NEAR(inv->layers[3].parameters() / 1e9, 11.5, 0.3);
  // FP8 resident: ~1 byte per parameter plus the bf16 embedding and head.
  const double bytes = static_cast<double>(inv->device_bytes(config->quant));
  EXPECT_GT(bytes / 1e9, 660);
  EXPECT_LT(bytes / 1e9, 700);
  // Unquantised it would be bf16: twice that.
  QuantConfig bf16;
  EXPECT_NEAR(static_cast<double>(inv->device_bytes(bf16)) / inv->parameters(), 2.0, 1e-3);
}

TEST(ShippedConfigs, Glm5HasItsPublishedSizeAndGlm52Pattern) {
  auto config = LoadModelConfig("configs/models/glm5");
  ASSERT_TRUE(config.ok()) << config.status().message();
  EXPECT_EQ(config->num_layers, 78);
  EXPECT_EQ(config->pattern.num_full(), 21);  // index_topk_freq 4, offset 3
  EXPECT_TRUE(config->pattern.is_full(0) && config->pattern.is_full(1) && config->pattern.is_full(2));
  EXPECT_FALSE(config->pattern.is_full(3));
  EXPECT_TRUE(config->pattern.is_full(6));
  EXPECT_TRUE(config->shared_layers_lack_indexer);
  auto inv = InventoryFromConfig(*config);
  ASSERT_TRUE(inv.ok());
  // ~744B with an indexer in every layer; the 57 Shared layers ship none (GLM-5.2 style).
  EXPECT_NEAR(inv->parameters() / 1e9, 743.3, 1.0);
  EXPECT_EQ(inv->layers[3].indexer_parameters(), 0);
  EXPECT_GT(inv->layers[6].indexer_parameters(), 0);
}

TEST(Inventory, OversizedConfigIsAnErrorNamingTheField) {
  auto config = LoadModelConfig("configs/models/deepseek_v32");
  ASSERT_TRUE(config.ok());
  config->hidden_size = int64_t{1} << 40;
  auto inv = InventoryFromConfig(*config);
  ASSERT_FALSE(inv.ok());
  EXPECT_NE(inv.status().message().find("hidden_size"), std::string::npos) << inv.status().message();
}

TEST(LayerFlops, PairsAndAttention) {
  EXPECT_DOUBLE_EQ(CausalPairs(4), 10);
  EXPECT_DOUBLE_EQ(SparsePairs(4, 2), 1 + 2 + 2 + 2);
  EXPECT_DOUBLE_EQ(SparsePairs(3, 8), CausalPairs(3));
  auto config = LoadModelConfig("configs/models/deepseek_v32");
  ASSERT_TRUE(config.ok());
  const LayerFlops full = ForwardFlops(*config, 10, true, 4096), shared = ForwardFlops(*config, 10, false, 4096);
  EXPECT_EQ(full.gemm, shared.gemm);
  EXPECT_EQ(shared.indexer, 0);
  // Indexer scores: 2 x 64 heads x 128 x causal pairs, plus its projections.
  EXPECT_NEAR(full.indexer, 2.0 * 64 * 128 * CausalPairs(4096) + IndexerProjectionFlops(*config, 4096), 1);
}

}  // namespace
}  // namespace indexcache
