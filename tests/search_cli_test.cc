// `indexcache search` through the real binary: 2 ranks under mpirun write the same search.json as
// 1 rank; a search stopped after a step and resumed writes the same file as an uninterrupted one;
// a candidate's loss equals `eval --pattern` of that pattern; the result feeds eval and export
// through --pattern search.json; impossible requests are one line each, exit 1.
#include <sys/wait.h>

#include <cmath>
#include <cstdio>
#include <string>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "core/file_util.h"
#include "core/test_util.h"
#include "kernels/tolerances.h"

namespace indexcache {
namespace {

using json = nlohmann::json;

const char kGentle[] = "tests/data/dsv32_gentle_bf16";  // 4 layers with indexers, 96 tokens, top-k 32
const char kGlm[] = "tests/data/glm_shared_bf16";        // FSSF, layers 1-2 without indexer weights

// The gentle fixture's 96 tokens cut into 3 windows of 32.
std::string Search(const std::string& extra) {
  return std::string("tools/indexcache search --model ") + kGentle + " --data " + kGentle +
         "/tokens.npy --seq-len 32 --target 2 --refine " + extra;
}

std::string Read(const std::string& path) {
  auto s = ReadFileToString(path);
  EXPECT_TRUE(s.ok()) << s.status().message();
  return s.ok() ? *s : "";
}

TEST(SearchCli, TwoRanksWriteWhatOneRankWrites) {
  const std::string dir = MakeTempDir();
  std::string one, two;
  ASSERT_EQ(RunShell(Search("--out " + dir + "/one.json"), &one), 0) << one;
  ASSERT_EQ(RunShell("mpirun --allow-run-as-root --oversubscribe -np 2 " + Search("--out " + dir + "/two.json"), &two), 0)
      << two;
  EXPECT_NE(two.find("2 ranks"), std::string::npos) << two;
  EXPECT_EQ(Read(dir + "/one.json"), Read(dir + "/two.json"));
  EXPECT_TRUE(FileExists(dir + "/one.svg"));
  const json j = json::parse(Read(dir + "/one.json"));
  EXPECT_TRUE(j["done"].get<bool>());
  EXPECT_EQ(j["full_layers"].size(), 2u);
  EXPECT_EQ(j["settings"]["sequences"], 3);
  EXPECT_LT(j["layer_forwards"].get<int64_t>(), j["naive_layer_forwards"].get<int64_t>());
  EXPECT_EQ(j["config_keys"]["index_topk_pattern"], j["pattern"]);
}

TEST(SearchCli, StoppedAndResumedEqualsUninterrupted) {
  const std::string dir = MakeTempDir();
  std::string out;
  ASSERT_EQ(RunShell(Search("--out " + dir + "/whole.json"), &out), 0) << out;
  out.clear();
  ASSERT_EQ(RunShell(Search("--out " + dir + "/part.json --stop-after-step 1"), &out), 0) << out;
  EXPECT_NE(out.find("--resume continues"), std::string::npos) << out;
  EXPECT_FALSE(json::parse(Read(dir + "/part.json"))["done"].get<bool>());
  out.clear();
  ASSERT_EQ(RunShell(Search("--out " + dir + "/part.json --resume"), &out), 0) << out;
  EXPECT_NE(out.find("resuming"), std::string::npos) << out;
  EXPECT_EQ(Read(dir + "/part.json"), Read(dir + "/whole.json"));
  // Resuming with other settings is refused, naming the field.
  out.clear();
  EXPECT_EQ(RunShell(std::string("tools/indexcache search --model ") + kGentle + " --data " + kGentle +
                         "/tokens.npy --seq-len 32 --target 3 --refine --resume --out " + dir + "/part.json",
                     &out),
            1);
  EXPECT_NE(out.find("settings.target"), std::string::npos) << out;
}

TEST(SearchCli, CandidateLossEqualsEvalAndResultFeedsEvalAndExport) {
  const std::string dir = MakeTempDir();
  std::string out;
  ASSERT_EQ(RunShell(Search("--out " + dir + "/s.json"), &out), 0) << out;
  const json j = json::parse(Read(dir + "/s.json"));
  for (const auto& [layer, loss] : j["steps"][0]["candidates"].items()) {
    std::string p = "FFFF";
    p[std::stoi(layer)] = 'S';
    std::string ev;
    ASSERT_EQ(RunShell(std::string("tools/indexcache eval --json --model ") + kGentle + " --data " + kGentle +
                           "/tokens.npy --seq-len 32 --pattern " + p,
                       &ev),
              0)
        << ev;
    const double want = json::parse(ev)["loss"].get<double>();
    EXPECT_NEAR(loss.get<double>(), want, kSearchLossRelTol * want) << p;
  }
  std::string ev;
  ASSERT_EQ(RunShell(std::string("tools/indexcache eval --json --model ") + kGentle + " --data " + kGentle +
                         "/tokens.npy --seq-len 32 --pattern " + dir + "/s.json",
                     &ev),
            0)
      << ev;
  const json e = json::parse(ev);
  EXPECT_EQ(e["pattern"], j["pattern"]);
  EXPECT_NEAR(e["loss"].get<double>(), j["final_loss"].get<double>(), kSearchLossRelTol * 10);

  // A training-free export: only the pattern keys change.
  std::string ex;
  ASSERT_EQ(RunShell(std::string("tools/indexcache export --model ") + kGentle + " --pattern " + dir + "/s.json --out " +
                         dir + "/exported",
                     &ex),
            0)
      << ex;
  const json config = json::parse(Read(dir + "/exported/config.json"));
  EXPECT_EQ(config["index_topk_pattern"], j["pattern"]);
  EXPECT_EQ(config["indexer_types"], j["config_keys"]["indexer_types"]);
  // No tensor changed: the one shard is linked (or, from a fixture on another filesystem, copied
  // with a warning); --copy-shards copies it.
  EXPECT_NE(ex.find("shards: "), std::string::npos) << ex;
  EXPECT_NE(ex.find("0 rewritten"), std::string::npos) << ex;
  std::string copied;
  ASSERT_EQ(RunShell(std::string("tools/indexcache export --copy-shards --model ") + kGentle + " --pattern " + dir +
                         "/s.json --out " + dir + "/copied",
                     &copied),
            0)
      << copied;
  EXPECT_NE(copied.find("shards: 0 hard-linked, 1 copied, 0 rewritten"), std::string::npos) << copied;
  EXPECT_EQ(Read(dir + "/copied/model.safetensors"), Read(std::string(kGentle) + "/model.safetensors"));
}

void ExpectOneLineError(const std::string& args, const std::string& needle) {
  std::string out;
  EXPECT_EQ(RunShell("tools/indexcache search " + args, &out), 1) << out;
  EXPECT_NE(out.find(needle), std::string::npos) << out;
  EXPECT_EQ(std::count(out.begin(), out.end(), '\n'), 1) << out;
}

TEST(SearchCli, ImpossibleRequestsAreOneLineErrors) {
  const std::string dir = MakeTempDir();
  const std::string g = std::string("--model ") + kGentle + " --data " + kGentle + "/tokens.npy --out " + dir + "/x.json ";
  ExpectOneLineError(g + "--seq-len 32 --target 0", "must keep between 1 and 4");
  ExpectOneLineError(g + "--seq-len 32 --target 5", "must keep between 1 and 4");
  ExpectOneLineError(g + "--seq-len 32 --target 1/0", "--target");
  ExpectOneLineError(g + "--seq-len 200 --target 2", "tokens.npy: no complete sequence of --seq-len 200");
  ExpectOneLineError(g + "--seq-len 32", "exactly one of --target and --budget");
  ExpectOneLineError(g + "--seq-len 32 --target 2 --budget 1", "exactly one of --target and --budget");
  ExpectOneLineError(g + "--seq-len 32 --budget -1", "--budget must be a percentage");
  const std::string glm = std::string("--model ") + kGlm + " --data " + kGlm + "/tokens.npy --seq-len 36 --out " + dir + "/y.json ";
  ExpectOneLineError(glm + "--target 2 --keep-full 1", "layer 1 must stay Full but the checkpoint has no indexer weights");
  ExpectOneLineError(glm + "--target 3", "only 2 of the 4 layers have indexer weights");
  ASSERT_TRUE(WriteFileAtomic(dir + "/x.json", "{}").ok());
  ExpectOneLineError(g + "--seq-len 32 --target 2", "x.json exists: pass --resume");
  ExpectOneLineError(g + "--seq-len 32 --target 2 --resume", "x.json: missing object 'settings'");
}

}  // namespace
}  // namespace indexcache
