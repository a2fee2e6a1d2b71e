// Export: warnings and refusals for what serving engines would get wrong, the indexer dtype
// option, and which side files travel with the export.
#include "trainer/export.h"

#include <cmath>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "core/file_util.h"
#include "core/safetensors.h"
#include "core/test_util.h"
#include "model/dsa_model.h"

namespace indexcache {
namespace {

using json = nlohmann::json;

const char kFp8[] = "tests/data/dsv32_yarn_fp8";   // deepseek_v32, 3 layers, FP8 blocks 16x24
const char kGlm[] = "tests/data/glm_shared_bf16";  // glm_moe_dsa, 4 layers, FSSF, no S indexers

IndexPattern Pattern(const std::string& s) { return *IndexPattern::Parse(s, static_cast<int>(s.size())); }

bool AnyContains(const std::vector<std::string>& lines, const std::string& needle) {
  for (const std::string& l : lines) {
    if (l.find(needle) != std::string::npos) return true;
  }
  return false;
}

// The model's own indexers, nudged so the export visibly carries them.
IndexerSet Trained(const DsaModel& model, std::vector<int> layers) {
  IndexerSet set;
  for (int l : layers) {
    IndexerWeights w = model.weights().layers[l].indexer;
    w.wq_b *= 1.01f;
    w.wk *= 0.99f;
    set[l] = w;
  }
  return set;
}

TEST(Export, DeepseekV32DropIsRefusedUnlessForced) {
  const std::string dir = MakeTempDir();
  ExportOptions options;
  options.drop_shared_indexers = true;
  const Status refused = ExportModel(kFp8, {}, Pattern("FSF"), options, dir + "/out");
  ASSERT_FALSE(refused.ok());
  EXPECT_NE(refused.message().find("deepseek_v32"), std::string::npos) << refused.message();
  EXPECT_NE(refused.message().find("--force"), std::string::npos) << refused.message();
  EXPECT_FALSE(IsDirectory(dir + "/out"));

  options.force = true;
  ExportReport report;
  ASSERT_TRUE(ExportModel(kFp8, {}, Pattern("FSF"), options, dir + "/out", &report).ok());
  EXPECT_TRUE(AnyContains(report.warnings, "randomly"));
  const json cfg = json::parse(ReadBytes(dir + "/out/config.json"));
  EXPECT_EQ(cfg["use_index_cache"], true);
  EXPECT_EQ(cfg["index_topk_pattern"], "FSF");
  EXPECT_FALSE(SafetensorsCheckpoint::Open(dir + "/out")->Has("model.layers.1.self_attn.indexer.wk.weight"));
}

TEST(Export, WarnsWhereTransformersIgnoresThePattern) {
  auto config = LoadModelConfig(kFp8);
  ASSERT_TRUE(config.ok());
  auto warnings = CheckExport(*config, {}, Pattern("FSF"), ExportOptions());
  ASSERT_TRUE(warnings.ok());
  EXPECT_TRUE(AnyContains(*warnings, "runs every layer's indexer"));
  // All-F: nothing to ignore.
  EXPECT_TRUE(CheckExport(*config, {}, Pattern("FFF"), ExportOptions())->empty());
  // glm_moe_dsa applies indexer_types: no warning, and dropping is fine.
  auto glm = LoadModelConfig(kGlm);
  ExportOptions drop;
  drop.drop_shared_indexers = true;
  auto none = CheckExport(*glm, {}, Pattern("FSSF"), drop);
  ASSERT_TRUE(none.ok());
  EXPECT_TRUE(none->empty());
}

TEST(Export, WarnsAboutFullLayersTheCheckpointDidNotTrain) {
  auto model = DsaModel::Load(kFp8);
  ASSERT_TRUE(model.ok());
  auto warnings = CheckExport(model->config(), Trained(*model, {0, 1}), Pattern("FSF"), ExportOptions());
  ASSERT_TRUE(warnings.ok());
  EXPECT_TRUE(AnyContains(*warnings, "layer 2 is Full in pattern FSF but the checkpoint did not train its indexer"));
  EXPECT_TRUE(AnyContains(*warnings, "layer 1 is Shared in pattern FSF but the checkpoint trained its indexer"));
  EXPECT_FALSE(AnyContains(*warnings, "layer 0"));
  // Without a checkpoint there is nothing to compare.
  EXPECT_FALSE(AnyContains(*CheckExport(model->config(), {}, Pattern("FSF"), ExportOptions()), "did not train"));
}

TEST(Export, IndexerDtypeBf16KeepsTrainedIndexersBf16InsideFp8) {
  auto model = DsaModel::Load(kFp8);
  ASSERT_TRUE(model.ok());
  const IndexerSet trained = Trained(*model, {0, 1, 2});
  const std::string dir = MakeTempDir();
  const std::string wq = "model.layers.0.self_attn.indexer.wq_b.weight";
  for (const char* option : {"checkpoint", "bf16", "fp8"}) {
    ExportOptions options;
    options.indexer_dtype = *ParseIndexerDType(option);
    const std::string out = dir + "/" + option;
    ASSERT_TRUE(ExportModel(kFp8, trained, Pattern("FFF"), options, out).ok()) << option;
    auto ckpt = SafetensorsCheckpoint::Open(out);
    ASSERT_TRUE(ckpt.ok());
    const Tensor t = *ckpt->Get(wq);
    const bool bf16 = std::string(option) == "bf16";
    EXPECT_EQ(t.dtype(), bf16 ? DType::kBF16 : DType::kF8E4M3) << option;
    EXPECT_EQ(ckpt->Has(wq + "_scale_inv"), !bf16) << option;
    // weights_proj is F32 in this checkpoint and stays so under every option.
    EXPECT_EQ(ckpt->Get("model.layers.0.self_attn.indexer.weights_proj.weight")->dtype(), DType::kF32);
    const json cfg = json::parse(ReadBytes(out + "/config.json"));
    const json& skip = cfg["quantization_config"]["modules_to_not_convert"];
    EXPECT_EQ(!skip.is_null() && std::find(skip.begin(), skip.end(), "model.layers.0.self_attn.indexer.wq_b") != skip.end(),
              bf16)
        << cfg.dump();
    // The exported weights load, and come back within the dtype's rounding of the trained ones.
    auto exported = DsaModel::Load(out);
    ASSERT_TRUE(exported.ok()) << exported.status().ToString();
    const Matrix& got = exported->weights().layers[0].indexer.wq_b;
    const Matrix& want = trained.at(0).wq_b;
    const double rel = (got - want).norm() / want.norm();
    EXPECT_LT(rel, bf16 ? 4e-3 : 6e-2) << option;
  }
  // fp8 needs an FP8 checkpoint.
  ExportOptions fp8;
  fp8.indexer_dtype = IndexerDType::kFp8;
  const Status s = ExportModel(kGlm, {}, Pattern("FSSF"), fp8, dir + "/glm");
  ASSERT_FALSE(s.ok());
  EXPECT_NE(s.message().find("--indexer-dtype fp8"), std::string::npos);
  EXPECT_FALSE(ParseIndexerDType("int4").ok());
}

TEST(Export, CopiesSideFilesOnlyAndSaysWhich) {
  const std::string src = MakeTempDir() + "/model";
  ASSERT_EQ(std::system(("mkdir -p " + src + " && cp " + kGlm + "/* " + src + "/").c_str()), 0);
  WriteBytes(src + "/tokenizer.json", "{}");
  WriteBytes(src + "/generation_config.json", "{}");
  WriteBytes(src + "/pytorch_model.bin", "stale");
  const std::string out = MakeTempDir() + "/exported";
  ExportReport report;
  ASSERT_TRUE(ExportModel(src, {}, Pattern("FSSF"), ExportOptions(), out, &report).ok());
  EXPECT_EQ(report.copied, (std::vector<std::string>{"generation_config.json", "tokenizer.json"}));
  EXPECT_TRUE(FileExists(out + "/tokenizer.json"));
  for (const char* stale : {"logits.npy", "hf_bf16_logits.npy", "tokens.npy", "topk.npy", "pytorch_model.bin"}) {
    EXPECT_FALSE(FileExists(out + "/" + stale)) << stale;
    EXPECT_NE(std::find(report.skipped.begin(), report.skipped.end(), stale), report.skipped.end()) << stale;
  }
  EXPECT_TRUE(FileExists(out + "/config.json"));
  EXPECT_TRUE(FileExists(out + "/model.safetensors"));
}

}  // namespace
}  // namespace indexcache
