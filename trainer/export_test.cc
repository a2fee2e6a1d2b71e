// Export: warnings and refusals for what serving engines would get wrong, the indexer dtype
// option, which side files travel with the export, and how the shards get there (hard links for
// untouched shards, rewrites without the changed tensors, one new shard for the trained ones).
#include "trainer/export.h"

#include <sys/stat.h>
#include <unistd.h>

#include <cmath>
#include <cstring>
#include <map>
#include <set>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "core/file_util.h"
#include "core/safetensors.h"
#include "core/test_util.h"
#include "model/dsa_model.h"
#include "trainer/fs_util.h"

namespace indexcache {
namespace {

using json = nlohmann::json;

const char kFp8[] = "tests/data/dsv32_yarn_fp8";   // deepseek_v32, 3 layers, FP8 blocks 16x24
const char kGlm[] = "tests/data/glm_shared_bf16";  // glm_moe_dsa, 4 layers, FSSF, no S indexers
const char kGroups[] = "tests/data/dsv32_moe_groups";  // deepseek_v32, 3 layers, fp32, two shards

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

// ---- Shards: hard links, rewrites, the new shard (issue 10) ----

// A copy of kGroups in five shards: the non-layer tensors; layer 0; layer 1 without its indexer;
// layer 1's indexer alone; layer 2. Trained layers 0 and 2 under FSF then touch shards 2 and 5,
// and dropping the Shared indexers touches shard 4 and nothing else.
std::string ShardOfName(const std::string& name) {
  auto shard = [](int i) {
    char b[64];
    std::snprintf(b, sizeof(b), "model-%05d-of-00005.safetensors", i);
    return std::string(b);
  };
  if (name.rfind("model.layers.0.", 0) == 0) return shard(2);
  if (name.rfind(IndexerTensorPrefix(1), 0) == 0) return shard(4);
  if (name.rfind("model.layers.1.", 0) == 0) return shard(3);
  if (name.rfind("model.layers.2.", 0) == 0) return shard(5);
  return shard(1);
}

std::string FiveShardSource() {
  const std::string dir = MakeTempDir("five_shards");
  auto src = SafetensorsCheckpoint::Open(kGroups);
  EXPECT_TRUE(src.ok());
  std::map<std::string, NamedTensors> by_shard;
  json weight_map = json::object();
  for (const std::string& name : src->names()) {
    by_shard[ShardOfName(name)].push_back({name, *src->Get(name)});
    weight_map[name] = ShardOfName(name);
  }
  for (const auto& [shard, tensors] : by_shard) {
    EXPECT_TRUE(WriteSafetensors(dir + "/" + shard, tensors, {{"format", "pt"}}).ok());
  }
  WriteBytes(dir + "/model.safetensors.index.json", json{{"metadata", json::object()}, {"weight_map", weight_map}}.dump());
  WriteBytes(dir + "/config.json", ReadBytes(std::string(kGroups) + "/config.json"));
  return dir;
}

// Every indexer tensor of the trained layers differs from the model's.
IndexerSet TrainedAll(const DsaModel& model, std::vector<int> layers) {
  IndexerSet set = Trained(model, layers);
  for (auto& [l, w] : set) {
    w.k_norm_weight *= 1.5f;
    w.k_norm_bias.array() += 0.25f;
    w.weights_proj *= -1.0f;
  }
  return set;
}

struct FileId {
  dev_t dev;
  ino_t ino;
  bool operator==(const FileId& o) const { return dev == o.dev && ino == o.ino; }
};
FileId Id(const std::string& path) {
  struct stat st;
  EXPECT_EQ(::stat(path.c_str(), &st), 0) << path;
  return {st.st_dev, st.st_ino};
}

std::vector<std::string> Sorted(std::vector<std::string> v) {
  std::sort(v.begin(), v.end());
  return v;
}

std::vector<std::string> TensorNames(const std::string& path) {
  auto file = SafetensorsFile::Open(path);
  EXPECT_TRUE(file.ok()) << path;
  return file.ok() ? Sorted((*file)->names()) : std::vector<std::string>{};
}

// The index names every tensor of the output's shard files exactly once, each at the file that
// holds it, and no file lies about; returns the weight map.
std::map<std::string, std::string> CheckIndexComplete(const std::string& out) {
  const json index = json::parse(ReadBytes(out + "/model.safetensors.index.json"));
  std::map<std::string, std::string> weight_map;
  for (auto it = index["weight_map"].begin(); it != index["weight_map"].end(); ++it) {
    weight_map[it.key()] = it.value().get<std::string>();
  }
  std::map<std::string, int> seen;  // tensor -> number of shard files holding it
  uint64_t total = 0;
  const std::vector<std::string> files = *ListDirectory(out);
  for (const std::string& f : files) {
    if (f.size() < 12 || f.compare(f.size() - 12, 12, ".safetensors") != 0) continue;
    auto file = SafetensorsFile::Open(out + "/" + f);
    EXPECT_TRUE(file.ok()) << f;
    for (const std::string& n : (*file)->names()) {
      ++seen[n];
      EXPECT_EQ(weight_map[n], f) << n;
      total += (*file)->Get(n)->nbytes();
    }
  }
  for (const auto& [n, count] : seen) EXPECT_EQ(count, 1) << n << " is in several shard files";
  EXPECT_EQ(seen.size(), weight_map.size());
  for (const auto& [n, f] : weight_map) EXPECT_TRUE(seen.count(n)) << n << " is indexed but in no file";
  EXPECT_EQ(index["metadata"]["total_size"].get<uint64_t>(), total);
  return weight_map;
}

bool SameBytes(const Tensor& a, const Tensor& b) {
  return a.dtype() == b.dtype() && a.shape() == b.shape() && std::memcmp(a.raw(), b.raw(), a.nbytes()) == 0;
}

bool SameIndexer(const IndexerWeights& a, const IndexerWeights& b) {
  auto same = [](const auto& x, const auto& y) {
    return x.size() == y.size() && std::memcmp(x.data(), y.data(), x.size() * sizeof(float)) == 0;
  };
  return same(a.wq_b, b.wq_b) && same(a.wk, b.wk) && same(a.k_norm_weight, b.k_norm_weight) &&
         same(a.k_norm_bias, b.k_norm_bias) && same(a.weights_proj, b.weights_proj);
}

std::vector<std::string> IndexerNames(std::vector<int> layers) {
  std::vector<std::string> names;
  for (int l : layers) {
    for (const char* f : {"k_norm.bias", "k_norm.weight", "weights_proj.weight", "wk.weight", "wq_b.weight"}) {
      names.push_back(IndexerTensorPrefix(l) + f);
    }
  }
  return Sorted(names);
}

TEST(ExportShards, UntouchedShardsAreHardLinksAndTrainedTensorsGoToANewShard) {
  const std::string src = FiveShardSource();
  auto model = DsaModel::Load(src);
  ASSERT_TRUE(model.ok()) << model.status().ToString();
  const IndexerSet trained = TrainedAll(*model, {0, 2});
  auto source = SafetensorsCheckpoint::Open(src);
  ASSERT_TRUE(source.ok());
  for (bool drop : {false, true}) {
    SCOPED_TRACE(drop ? "drop_shared_indexers" : "keep");
    ExportOptions options;
    options.drop_shared_indexers = drop;
    options.force = true;  // deepseek_v32; our loader reads a dropped export
    const std::string out = MakeTempDir() + "/exported";
    ExportReport report;
    ASSERT_TRUE(ExportModel(src, trained, Pattern("FSF"), options, out, &report).ok());
    const std::string s1 = "model-00001-of-00005.safetensors", s2 = "model-00002-of-00005.safetensors",
                      s3 = "model-00003-of-00005.safetensors", s4 = "model-00004-of-00005.safetensors",
                      s5 = "model-00005-of-00005.safetensors", fresh = "model-indexcache-00001.safetensors";

    // Untouched shards: the source's own inodes.
    std::vector<std::string> linked = {s1, s3};
    if (!drop) linked.push_back(s4);
    EXPECT_EQ(report.linked_shards, linked);
    for (const std::string& s : linked) EXPECT_TRUE(Id(out + "/" + s) == Id(src + "/" + s)) << s;
    EXPECT_TRUE(report.copied_shards.empty());
    EXPECT_TRUE(report.warnings.size() == 1 && AnyContains(report.warnings, "runs every layer's indexer"));
    // Shards that held trained (or dropped) tensors: rewritten without them, or gone.
    EXPECT_EQ(report.rewritten_shards, (std::vector<std::string>{s2, s5}));
    EXPECT_EQ(report.removed_shards, drop ? std::vector<std::string>{s4} : std::vector<std::string>{});
    EXPECT_EQ(FileExists(out + "/" + s4), !drop);
    for (const std::string& s : {s2, s5}) {
      EXPECT_FALSE(Id(out + "/" + s) == Id(src + "/" + s)) << s;
      std::vector<std::string> want;
      for (const std::string& n : TensorNames(src + "/" + s)) {
        if (n.find(".self_attn.indexer.") == std::string::npos) want.push_back(n);
      }
      EXPECT_EQ(TensorNames(out + "/" + s), want) << s;
    }
    // The new shard: exactly the trained tensors.
    EXPECT_EQ(report.new_shard, fresh);
    EXPECT_EQ(TensorNames(out + "/" + fresh), IndexerNames({0, 2}));

    // The index: every tensor once, trained ones at the new shard, dropped ones gone.
    const std::map<std::string, std::string> weight_map = CheckIndexComplete(out);
    std::set<std::string> want_names;
    for (const std::string& n : source->names()) {
      if (!(drop && n.rfind(IndexerTensorPrefix(1), 0) == 0)) want_names.insert(n);
    }
    std::set<std::string> got_names;
    for (const auto& [n, f] : weight_map) got_names.insert(n);
    EXPECT_EQ(got_names, want_names);
    for (const std::string& n : IndexerNames({0, 2})) EXPECT_EQ(weight_map.at(n), fresh) << n;

    // Loaded back: the trained indexers, and every other tensor bit-exact.
    auto exported = DsaModel::Load(out);
    ASSERT_TRUE(exported.ok()) << exported.status().ToString();
    EXPECT_EQ(exported->pattern().ToString(), "FSF");
    for (int l : {0, 2}) EXPECT_TRUE(SameIndexer(exported->weights().layers[l].indexer, trained.at(l))) << l;
    EXPECT_FALSE(SameIndexer(exported->weights().layers[0].indexer, model->weights().layers[0].indexer));
    auto ckpt = SafetensorsCheckpoint::Open(out);
    ASSERT_TRUE(ckpt.ok());
    const std::vector<std::string> changed = IndexerNames({0, 2});
    for (const std::string& n : got_names) {
      if (std::find(changed.begin(), changed.end(), n) != changed.end()) continue;
      EXPECT_TRUE(SameBytes(*ckpt->Get(n), *source->Get(n))) << n;
    }
    // The source is untouched: still its own five shards, loading as before.
    EXPECT_EQ(TensorNames(src + "/" + s2).size(), TensorNames(out + "/" + s2).size() + 5);
  }
}

TEST(ExportShards, CopyShardsGivesIndependentCopies) {
  const std::string src = FiveShardSource();
  auto model = DsaModel::Load(src);
  ASSERT_TRUE(model.ok());
  ExportOptions options;
  options.copy_shards = true;
  const std::string out = MakeTempDir() + "/exported";
  ExportReport report;
  ASSERT_TRUE(ExportModel(src, TrainedAll(*model, {0, 2}), Pattern("FSF"), options, out, &report).ok());
  const std::vector<std::string> copied = {"model-00001-of-00005.safetensors", "model-00003-of-00005.safetensors",
                                           "model-00004-of-00005.safetensors"};
  EXPECT_EQ(report.copied_shards, copied);
  EXPECT_TRUE(report.linked_shards.empty());
  for (const std::string& s : copied) {
    EXPECT_FALSE(Id(out + "/" + s) == Id(src + "/" + s)) << s;
    EXPECT_EQ(ReadBytes(out + "/" + s), ReadBytes(src + "/" + s)) << s;
  }
  CheckIndexComplete(out);
  ASSERT_TRUE(DsaModel::Load(out).ok());
}

// A Hugging Face cache snapshot holds symbolic links into its blob store: the export links the
// blobs themselves, never the (relative, and then dangling) symbolic links.
TEST(ExportShards, SymbolicLinkShardsAreLinkedToTheirTargets) {
  const std::string five = FiveShardSource();
  const std::string root = MakeTempDir("hf_cache");
  ASSERT_TRUE(MakeDirectories(root + "/blobs").ok());
  ASSERT_TRUE(MakeDirectories(root + "/snapshots/abc").ok());
  const std::string snap = root + "/snapshots/abc";
  const std::vector<std::string> files = *ListDirectory(five);
  for (const std::string& f : files) {
    ASSERT_EQ(std::rename((five + "/" + f).c_str(), (root + "/blobs/" + f).c_str()), 0);
    ASSERT_EQ(::symlink(("../../blobs/" + f).c_str(), (snap + "/" + f).c_str()), 0);
  }
  const std::string out = MakeTempDir() + "/exported";
  ExportReport report;
  ASSERT_TRUE(ExportModel(snap, {}, Pattern("FSF"), ExportOptions(), out, &report).ok());
  EXPECT_EQ(report.linked_shards.size(), 5u);  // only the pattern changed: no shard is touched
  EXPECT_TRUE(report.new_shard.empty());
  for (const std::string& s : report.linked_shards) {
    struct stat st;
    ASSERT_EQ(::lstat((out + "/" + s).c_str(), &st), 0);
    EXPECT_TRUE(S_ISREG(st.st_mode)) << s;
    EXPECT_TRUE(Id(out + "/" + s) == Id(root + "/blobs/" + s)) << s;
  }
  EXPECT_TRUE(DsaModel::Load(out).ok());
}

// Where hard links cannot go (the source on another filesystem), the shards are copied and a
// warning says so. Needs two filesystems: /dev/shm (tmpfs) and the test's temporary directory.
TEST(ExportShards, FallsBackToCopyingWhereHardLinksFail) {
  struct stat shm, tmp;
  if (::stat("/dev/shm", &shm) != 0 || ::stat(::testing::TempDir().c_str(), &tmp) != 0 || shm.st_dev == tmp.st_dev ||
      ::access("/dev/shm", W_OK) != 0) {
    GTEST_SKIP() << "needs a writable /dev/shm on another filesystem than " << ::testing::TempDir();
  }
  char tmpl[] = "/dev/shm/indexcache_export_XXXXXX";
  ASSERT_NE(::mkdtemp(tmpl), nullptr);
  const std::string src = tmpl;
  const std::vector<std::string> files = *ListDirectory(kGroups);
  for (const std::string& f : files) WriteBytes(src + "/" + f, ReadBytes(std::string(kGroups) + "/" + f));
  const std::string out = MakeTempDir() + "/exported";
  ExportReport report;
  const Status s = ExportModel(src, {}, Pattern("FFF"), ExportOptions(), out, &report);
  (void)RemoveTree(src);
  ASSERT_TRUE(s.ok()) << s.ToString();
  EXPECT_EQ(report.copied_shards,
            (std::vector<std::string>{"model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"}));
  EXPECT_TRUE(report.linked_shards.empty());
  EXPECT_TRUE(AnyContains(report.warnings, "hard-linking 2 unchanged shard(s)")) << ::testing::PrintToString(report.warnings);
  EXPECT_TRUE(AnyContains(report.warnings, "so they were copied"));
  CheckIndexComplete(out);
  EXPECT_TRUE(DsaModel::Load(out).ok());
}

// An export exported again: its trained shard is a source shard now, so the new one gets the
// next free name, and the old one keeps the trained tensors that did not change this time.
TEST(ExportShards, ReexportTakesTheNextShardName) {
  const std::string src = FiveShardSource();
  auto model = DsaModel::Load(src);
  ASSERT_TRUE(model.ok());
  const IndexerSet first = TrainedAll(*model, {0, 2});
  const std::string once = MakeTempDir() + "/once";
  ASSERT_TRUE(ExportModel(src, first, Pattern("FSF"), ExportOptions(), once).ok());
  IndexerSet second;
  second[0] = first.at(0);
  second[0].wk *= 2.0f;
  const std::string twice = MakeTempDir() + "/twice";
  ExportReport report;
  ASSERT_TRUE(ExportModel(once, second, Pattern("FSF"), ExportOptions(), twice, &report).ok());
  EXPECT_EQ(report.new_shard, "model-indexcache-00002.safetensors");
  EXPECT_EQ(report.rewritten_shards, std::vector<std::string>{"model-indexcache-00001.safetensors"});
  EXPECT_EQ(TensorNames(twice + "/model-indexcache-00001.safetensors"), IndexerNames({2}));
  EXPECT_EQ(TensorNames(twice + "/model-indexcache-00002.safetensors"), IndexerNames({0}));
  CheckIndexComplete(twice);
  auto exported = DsaModel::Load(twice);
  ASSERT_TRUE(exported.ok());
  EXPECT_TRUE(SameIndexer(exported->weights().layers[0].indexer, second.at(0)));
  EXPECT_TRUE(SameIndexer(exported->weights().layers[2].indexer, first.at(2)));
}

// A single model.safetensors is rewritten whole, trained tensors in place (transformers reads it
// before any index); with nothing changed it is linked.
TEST(ExportShards, SingleFileSourceIsRewrittenWholeOrLinked) {
  auto model = DsaModel::Load(kFp8);
  ASSERT_TRUE(model.ok());
  const std::string dir = MakeTempDir();
  ExportReport report;
  ASSERT_TRUE(ExportModel(kFp8, Trained(*model, {0}), Pattern("FFF"), ExportOptions(), dir + "/trained", &report).ok());
  EXPECT_EQ(report.rewritten_shards, std::vector<std::string>{"model.safetensors"});
  EXPECT_TRUE(report.new_shard.empty());
  EXPECT_EQ(*ListDirectory(dir + "/trained"),
            (std::vector<std::string>{"config.json", "model.safetensors", "model.safetensors.index.json"}));
  for (const auto& [n, f] : CheckIndexComplete(dir + "/trained")) EXPECT_EQ(f, "model.safetensors") << n;

  // A copy of the fixture in the temporary directory: under Bazel the fixture may sit on another
  // filesystem (the sandbox's), where it would be copied.
  const std::string src = dir + "/source";
  ASSERT_EQ(std::system(("mkdir -p " + src + " && cp " + kFp8 + "/* " + src + "/").c_str()), 0);
  ExportReport same;
  ASSERT_TRUE(ExportModel(src, {}, Pattern("FSF"), ExportOptions(), dir + "/pattern", &same).ok());
  EXPECT_EQ(same.linked_shards, std::vector<std::string>{"model.safetensors"});
  EXPECT_TRUE(Id(dir + "/pattern/model.safetensors") == Id(src + "/model.safetensors"));
}

// An index that lists a tensor its shard does not hold is an error, not a silently shorter index.
TEST(ExportShards, IndexPromisingAMissingTensorIsAnError) {
  const std::string src = FiveShardSource();
  json index = json::parse(ReadBytes(src + "/model.safetensors.index.json"));
  index["weight_map"]["model.layers.9.ghost.weight"] = "model-00001-of-00005.safetensors";
  WriteBytes(src + "/model.safetensors.index.json", index.dump());
  const std::string out = MakeTempDir() + "/exported";
  const Status s = ExportModel(src, {}, Pattern("FSF"), ExportOptions(), out);
  ASSERT_FALSE(s.ok());
  EXPECT_NE(s.message().find("model.layers.9.ghost.weight"), std::string::npos) << s.ToString();
  EXPECT_FALSE(IsDirectory(out));
}

}  // namespace
}  // namespace indexcache
