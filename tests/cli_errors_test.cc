// Bad input through the real `indexcache` binary: each case must exit with code 1 and print one
// line naming the file and the tensor or field at fault; never a crash, a hang or an output file.
#include <sys/wait.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <algorithm>
#include <string>
#include <vector>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "core/file_util.h"
#include "core/npy.h"
#include "core/safetensors.h"

namespace indexcache {
namespace {

using json = nlohmann::json;

const char kBinary[] = "tools/indexcache";              // runfiles-relative
const char kFixture[] = "tests/data/glm_shared_bf16";  // 4 layers, pattern FSSF, one shard

struct CliResult {
  int exit_code = -1;
  std::string output;  // stdout + stderr
};

CliResult RunCli(const std::string& args) {
  CliResult r;
  // `timeout` turns a hang into a failure instead of a stuck test.
  const std::string cmd = std::string("timeout 60 ") + kBinary + " " + args + " 2>&1";
  FILE* pipe = popen(cmd.c_str(), "r");
  if (!pipe) return r;
  char buf[4096];
  size_t n;
  while ((n = fread(buf, 1, sizeof(buf), pipe)) > 0) r.output.append(buf, n);
  const int status = pclose(pipe);
  r.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  return r;
}

class CliErrorsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/indexcache_cli_XXXXXX";
    ASSERT_NE(mkdtemp(tmpl), nullptr);
    dir_ = tmpl;
    for (const char* f : {"config.json", "model.safetensors", "tokens.npy"}) {
      auto text = ReadFileToString(std::string(kFixture) + "/" + f);
      ASSERT_TRUE(text.ok()) << text.status().ToString();
      ASSERT_TRUE(WriteFileAtomic(dir_ + "/" + f, *text).ok());
    }
  }
  void TearDown() override { EXPECT_EQ(std::system(("rm -rf " + dir_).c_str()), 0); }

  std::string Weights() const { return dir_ + "/model.safetensors"; }
  std::string Logits(const std::string& extra = "") {
    return "logits --model " + dir_ + " --tokens " + dir_ + "/tokens.npy --out " + dir_ + "/out.npy " + extra;
  }

  // Expects exit code 1, a single line, and every fragment present in it.
  void ExpectError(const std::string& args, const std::vector<std::string>& fragments) {
    const CliResult r = RunCli(args);
    EXPECT_EQ(r.exit_code, 1) << args << "\n" << r.output;
    ASSERT_FALSE(r.output.empty());
    EXPECT_EQ(r.output.find('\n'), r.output.size() - 1) << "not one line: " << r.output;
    for (const std::string& f : fragments) EXPECT_NE(r.output.find(f), std::string::npos) << "missing '" << f << "' in: " << r.output;
    EXPECT_FALSE(FileExists(dir_ + "/out.npy")) << "an output file was written despite the error";
  }

  // Rewrites the weights with `edit` applied to the list of tensors.
  void RewriteWeights(const std::function<void(NamedTensors*)>& edit) {
    auto file = SafetensorsFile::Open(Weights());
    ASSERT_TRUE(file.ok());
    NamedTensors tensors;
    std::vector<Tensor> copies;
    for (const std::string& name : (*file)->names()) {
      Tensor t = *(*file)->Get(name);
      Tensor c = Tensor::Zeros(t.dtype(), t.shape());
      std::memcpy(c.raw(), t.raw(), t.nbytes());
      tensors.push_back({name, c});
    }
    edit(&tensors);
    ASSERT_TRUE(WriteSafetensors(Weights(), tensors).ok());
  }

  void EditConfig(const std::function<void(json*)>& edit) {
    json j = json::parse(*ReadFileToString(dir_ + "/config.json"));
    edit(&j);
    ASSERT_TRUE(WriteFileAtomic(dir_ + "/config.json", j.dump(2)).ok());
  }

  std::string dir_;
};

TEST_F(CliErrorsTest, GoodInputWorks) {
  const CliResult r = RunCli(Logits());
  EXPECT_EQ(r.exit_code, 0) << r.output;
  EXPECT_TRUE(FileExists(dir_ + "/out.npy"));
}

TEST_F(CliErrorsTest, TruncatedFile) {
  ASSERT_TRUE(WriteFileAtomic(Weights(), std::string("\x10\x00\x00", 3)).ok());
  ExpectError(Logits(), {"model.safetensors", "truncated"});
}

TEST_F(CliErrorsTest, TruncatedDataSection) {
  std::string text = *ReadFileToString(Weights());
  text.resize(text.size() - 100);
  ASSERT_TRUE(WriteFileAtomic(Weights(), text).ok());
  ExpectError(Logits(), {"model.safetensors", "tensor '"});
}

TEST_F(CliErrorsTest, HeaderLengthPastEnd) {
  std::string text = *ReadFileToString(Weights());
  const uint64_t huge = text.size() + 1000;
  text.replace(0, 8, reinterpret_cast<const char*>(&huge), 8);
  ASSERT_TRUE(WriteFileAtomic(Weights(), text).ok());
  ExpectError(Logits(), {"model.safetensors", "header length"});
}

TEST_F(CliErrorsTest, MalformedHeaderJson) {
  std::string text = *ReadFileToString(Weights());
  text[8] = '[';
  text[9] = '}';
  ASSERT_TRUE(WriteFileAtomic(Weights(), text).ok());
  ExpectError(Logits(), {"model.safetensors", "malformed"});
}

TEST_F(CliErrorsTest, MissingTensor) {
  const std::string victim = "model.layers.2.self_attn.kv_b_proj.weight";
  RewriteWeights([&](NamedTensors* t) {
    t->erase(std::remove_if(t->begin(), t->end(), [&](const auto& p) { return p.first == victim; }), t->end());
  });
  ExpectError(Logits(), {dir_, victim});
}

TEST_F(CliErrorsTest, WrongShape) {
  const std::string victim = "model.layers.1.self_attn.o_proj.weight";
  RewriteWeights([&](NamedTensors* t) {
    for (auto& [name, tensor] : *t) {
      if (name == victim) tensor = *tensor.Reshape({tensor.size(1), tensor.size(0) / 2, 2});
    }
  });
  ExpectError(Logits(), {"model.safetensors", victim, "shape"});
}

TEST_F(CliErrorsTest, WrongDtype) {
  const std::string victim = "model.layers.0.mlp.gate_proj.weight";
  RewriteWeights([&](NamedTensors* t) {
    for (auto& [name, tensor] : *t) {
      if (name == victim) tensor = Tensor::Zeros(DType::kI32, tensor.shape());
    }
  });
  ExpectError(Logits(), {"model.safetensors", victim, "dtype"});
}

TEST_F(CliErrorsTest, UnknownModelType) {
  EditConfig([](json* j) { (*j)["model_type"] = "llama"; });
  ExpectError(Logits(), {"config.json", "model_type", "llama"});
}

TEST_F(CliErrorsTest, BadConfigField) {
  EditConfig([](json* j) { (*j)["hidden_size"] = "wide"; });
  ExpectError(Logits(), {"config.json", "hidden_size"});
}

TEST_F(CliErrorsTest, PatternOfWrongLength) { ExpectError(Logits("--pattern FSF"), {"--pattern", "3 letters", "4 layers"}); }

TEST_F(CliErrorsTest, PatternWithOtherLetters) { ExpectError(Logits("--pattern FSXF"), {"--pattern", "'X'"}); }

TEST_F(CliErrorsTest, PatternStartingWithShared) { ExpectError(Logits("--pattern SFFF"), {"--pattern", "layer 0"}); }

TEST_F(CliErrorsTest, PatternNeedsMissingIndexer) {
  // Layers 1 and 2 are Shared in the checkpoint and carry no indexer weights.
  ExpectError(Logits("--pattern FFSF"), {"model.layers.1.self_attn.indexer."});
}

TEST_F(CliErrorsTest, ConfigPatternStartingWithShared) {
  EditConfig([](json* j) { (*j)["indexer_types"] = {"shared", "full", "full", "full"}; });
  ExpectError(Logits(), {"config.json", "indexer_types"});
}

TEST_F(CliErrorsTest, TokenOutsideVocabulary) {
  Tensor tokens = Tensor::Zeros(DType::kI64, {5});
  tokens.data<int64_t>()[3] = 300;
  ASSERT_TRUE(WriteNpy(dir_ + "/tokens.npy", tokens).ok());
  ExpectError(Logits(), {"tokens.npy", "300", "position 3", "vocabulary"});
}

TEST_F(CliErrorsTest, NegativeToken) {
  Tensor tokens = Tensor::Zeros(DType::kI32, {2, 3});
  tokens.data<int32_t>()[4] = -1;
  ASSERT_TRUE(WriteNpy(dir_ + "/tokens.npy", tokens).ok());
  ExpectError(Logits(), {"tokens.npy", "-1", "[1, 1]"});
}

TEST_F(CliErrorsTest, MissingModelDirectory) { ExpectError("info --model /nonexistent/model", {"/nonexistent/model"}); }

TEST_F(CliErrorsTest, UnknownFlagAndCommand) {
  ExpectError("logits --modle x", {"--modle"});
  ExpectError("frobnicate", {"frobnicate"});
}

TEST_F(CliErrorsTest, EvalTooShortData) {
  ExpectError("eval --model " + dir_ + " --data " + dir_ + "/tokens.npy --seq-len 1000", {"tokens.npy", "seq-len"});
}

TEST_F(CliErrorsTest, HelpWorks) {
  for (const char* cmd : {"--help", "info --help", "logits --help", "eval --help"}) {
    const CliResult r = RunCli(cmd);
    EXPECT_EQ(r.exit_code, 0) << cmd;
    EXPECT_NE(r.output.find("usage: indexcache"), std::string::npos) << r.output;
  }
}

// ---- Issue 12: hostile sizes, JSON types and files ----------------------------------------

TEST_F(CliErrorsTest, ConfigSizesOfUnboundedMagnitude) {
  // index_topk 2^62 gave a 64-byte top-k buffer and a heap overflow.
  EditConfig([](json* j) { (*j)["index_topk"] = int64_t{1} << 62; });
  ExpectError(Logits(), {"config.json", "index_topk"});
  // 2^32 + 3 layers ran as 3 layers after a cast; 1e12 layers aborted on an allocation.
  EditConfig([](json* j) { (*j)["num_hidden_layers"] = (int64_t{1} << 32) + 3; });
  ExpectError(Logits(), {"config.json", "num_hidden_layers"});
  EditConfig([](json* j) { (*j)["num_hidden_layers"] = int64_t{1000000000000}; });
  ExpectError("info --model " + dir_, {"config.json", "num_hidden_layers"});
}

TEST_F(CliErrorsTest, WrongJsonTypeIsOneLineNotAnException) {
  // `quant_method: 5` aborted with nlohmann's type_error.302.
  EditConfig([](json* j) { (*j)["quantization_config"] = {{"quant_method", 5}}; });
  ExpectError("info --model " + dir_, {"config.json", "quantization_config.quant_method"});
}

TEST_F(CliErrorsTest, DeeplyNestedValueIsNotEchoed) {
  // A 300,000-deep array in an integer field overflowed the stack while the message was built.
  std::string text = *ReadFileToString(dir_ + "/config.json");
  const std::string key = "\"hidden_size\": ";
  const size_t at = text.find(key);
  ASSERT_NE(at, std::string::npos);
  const size_t value_end = text.find_first_of(",\n}", at + key.size());
  const std::string deep = std::string(300000, '[') + std::string(300000, ']');
  text.replace(at + key.size(), value_end - at - key.size(), deep);
  ASSERT_TRUE(WriteFileAtomic(dir_ + "/config.json", text).ok());
  ExpectError("info --model " + dir_, {"config.json", "hidden_size"});
}

TEST_F(CliErrorsTest, HugeMaxNewIsOneLine) {
  // 2^62 read a 5,760-byte cache out of bounds; 1e12 aborted on an allocation.
  const std::string gen = "generate --model " + dir_ + " --tokens " + dir_ + "/tokens.npy --max-new ";
  ExpectError(gen + "4611686018427387904", {"--max-new"});
  ExpectError(gen + "1000000000000", {"--max-new"});
  ExpectError(gen + "99999999999999999999999", {"--max-new"});
}

TEST_F(CliErrorsTest, Fp8CacheOnALatentSplitItCannotHoldIsOneLine) {
  // The fixture's kv_lora_rank 32 is no multiple of the FP8 cache's 128-value scale blocks.
  ExpectError("generate --fp8-cache --model " + dir_ + " --tokens " + dir_ + "/tokens.npy --max-new 2",
              {"FP8 latent cache", "kv_lora_rank"});
}

TEST_F(CliErrorsTest, IndexerFp8OnAnIndexerShapeItCannotRunIsOneLine) {
  // The fixture's index_head_dim 32: the FP8 kernel takes 128, and the flag must not quietly do nothing.
  ExpectError("logits --indexer-fp8 --model " + dir_ + " --tokens " + dir_ + "/tokens.npy --out " + dir_ + "/l.npy",
              {"--indexer-fp8", "config.json", "index_head_dim 32"});
}

TEST_F(CliErrorsTest, ShardNameOutsideTheModelDirectory) {
  // The index named "../x" or an absolute path, and the readers opened it.
  ASSERT_TRUE(WriteFileAtomic(dir_ + "/model.safetensors.index.json",
                              R"({"weight_map": {"model.embed_tokens.weight": "/etc/passwd"}})").ok());
  ExpectError("info --model " + dir_, {"model.safetensors.index.json", "plain file name"});
}

TEST_F(CliErrorsTest, ShiftedDataOffsetsAreRejected) {
  // Every tensor's offsets moved by one byte (the data section grows by one): garbage loaded.
  std::string text = *ReadFileToString(Weights());
  uint64_t len;
  std::memcpy(&len, text.data(), 8);
  json header = json::parse(text.substr(8, len));
  for (auto& [name, entry] : header.items()) {
    if (name == "__metadata__") continue;
    entry["data_offsets"][0] = entry["data_offsets"][0].get<uint64_t>() + 1;
    entry["data_offsets"][1] = entry["data_offsets"][1].get<uint64_t>() + 1;
  }
  std::string h = header.dump();
  while ((8 + h.size()) % 8) h.push_back(' ');
  const uint64_t new_len = h.size();
  std::string out(reinterpret_cast<const char*>(&new_len), 8);
  out += h + "\x00" + text.substr(8 + len);
  ASSERT_TRUE(WriteFileAtomic(Weights(), out).ok());
  ExpectError(Logits(), {"model.safetensors", "data_offsets"});
}

// Issue 12: a NaN model.norm printed "loss nan" and generate emitted "0 0 0", both with exit 0;
// a NaN inside a layer came out as finite wrong logits.
TEST_F(CliErrorsTest, NonFiniteWeightsAreOneLineNamingWhere) {
  auto poison = [&](const std::string& victim) {
    RewriteWeights([&](NamedTensors* t) {
      for (auto& [name, tensor] : *t) {
        if (name != victim) continue;
        ASSERT_EQ(tensor.dtype(), DType::kBF16);
        tensor.data<uint16_t>()[0] = 0x7fc0;  // bf16 NaN
      }
    });
  };
  poison("model.norm.weight");
  ExpectError("eval --model " + dir_ + " --data " + dir_ + "/tokens.npy --seq-len 18", {dir_, "model.norm.weight"});
  ExpectError("generate --model " + dir_ + " --tokens " + dir_ + "/tokens.npy --max-new 3", {dir_, "model.norm.weight"});
  ASSERT_TRUE(WriteFileAtomic(Weights(), *ReadFileToString(std::string(kFixture) + "/model.safetensors")).ok());
  poison("model.layers.2.self_attn.o_proj.weight");
  ExpectError(Logits(), {dir_, "layer 2 (model.layers.2.*)"});
}

TEST_F(CliErrorsTest, TrainFlagsAndEnumsAreChecked) {
  const std::string train = "train --config configs/distill_tiny.textproto ";
  // --set global_batch=1e9 aborted on bad_alloc; loss_mode=9 trained as DENSE; -5 was ignored.
  ExpectError(train + "--set global_batch=1000000000", {"--set global_batch=1000000000", "global_batch"});
  ExpectError(train + "--set loss_mode=9", {"loss_mode", "DENSE, SPARSE"});
  ExpectError(train + "--stop-after-step -5", {"--stop-after-step"});
  // A pattern of the wrong length from the config file was blamed on --pattern.
  const CliResult r = RunCli(train + "--set pattern=FSFS");
  EXPECT_EQ(r.exit_code, 1) << r.output;
  EXPECT_NE(r.output.find("--set pattern=FSFS: field 'pattern'"), std::string::npos) << r.output;
  EXPECT_EQ(r.output.find("--pattern"), std::string::npos) << r.output;
}

}  // namespace
}  // namespace indexcache
