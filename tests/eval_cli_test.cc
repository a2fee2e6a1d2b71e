// `indexcache eval` through the real binary: several patterns in one run equal single runs, --out
// writes the JSON and its pictures, tasks made from `generate`'s own output score 100 %, and
// logits / generate read a Megatron prefix like the .npy of the same tokens.
#include <sys/wait.h>

#include <algorithm>
#include <cstdio>
#include <string>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "core/file_util.h"
#include "core/npy.h"
#include "core/test_util.h"
#include "data/megatron_dataset.h"
#include "data/token_array.h"

namespace indexcache {
namespace {

using json = nlohmann::json;

const char kGentle[] = "tests/data/dsv32_gentle_bf16";  // 4 layers with indexers, 96 tokens, top-k 32

std::string Eval(const std::string& extra) {
  return std::string("tools/indexcache eval --json --model ") + kGentle + " --data " + kGentle +
         "/tokens.npy --seq-len 48 " + extra;
}

TEST(EvalCli, SeveralPatternsEqualSingleRunsAndOutWritesPictures) {
  const std::string dir = MakeTempDir();
  std::string out;
  ASSERT_EQ(RunShell(Eval("--patterns all,1/2,FSSF --bucket 16 --overlap --out " + dir + "/eval.json"), &out), 0) << out;
  const json many = json::parse(out);
  EXPECT_EQ(json::parse(ReadBytes(dir + "/eval.json")), many);
  ASSERT_EQ(many["patterns"].size(), 3u);
  EXPECT_EQ(many["loss"], many["patterns"][0]["loss"]);  // the old top-level keys: the first pattern
  EXPECT_EQ(many["overlap"].size(), 4u);
  for (const char* name : {"all", "1/2", "FSSF"}) {
    std::string one;
    ASSERT_EQ(RunShell(Eval(std::string("--pattern ") + name), &one), 0) << one;
    const json single = json::parse(one);
    bool found = false;
    for (const json& p : many["patterns"]) {
      if (p["name"] == name) {
        EXPECT_EQ(p["loss"], single["loss"]) << name;
        found = true;
      }
    }
    EXPECT_TRUE(found) << name;
  }
  for (const char* svg : {"eval_overlap.svg", "eval_loss_by_position.svg"}) EXPECT_TRUE(FileExists(dir + "/" + svg)) << svg;
}

TEST(EvalCli, TasksMadeFromGenerateScoreAllAndCorruptedNone) {
  const std::string dir = MakeTempDir();
  auto tokens = ReadTokenArray(std::string(kGentle) + "/tokens.npy", 256);
  ASSERT_TRUE(tokens.ok());
  const std::vector<int32_t> prompt(tokens->ids.begin(), tokens->ids.begin() + 60);  // beyond top-k 32
  Tensor p = Tensor::Zeros(DType::kI32, {60});
  std::copy(prompt.begin(), prompt.end(), p.data<int32_t>());
  ASSERT_TRUE(WriteNpy(dir + "/prompt.npy", p).ok());
  for (const char* pattern : {"all", "1/2"}) {
    std::string out;
    ASSERT_EQ(RunShell(std::string("tools/indexcache generate --model ") + kGentle + " --tokens " + dir +
                           "/prompt.npy --max-new 3 --pattern " + pattern + " --out " + dir + "/gen.npy",
                       &out),
              0)
        << out;
    auto gen = ReadTokenArray(dir + "/gen.npy", 256);
    ASSERT_TRUE(gen.ok());
    const std::vector<int32_t> answer(gen->ids.begin() + 60, gen->ids.end());
    std::vector<int32_t> wrong = answer;
    wrong.back() = (wrong.back() + 1) % 256;
    const std::string tasks = json({{"prompt", prompt}, {"answer", answer}, {"kind", "own"}, {"depth", 0.5}}).dump() +
                              "\n" + json({{"prompt", prompt}, {"answer", wrong}, {"kind", "corrupted"}}).dump() + "\n";
    WriteBytes(dir + "/tasks.jsonl", tasks);
    std::string ev;
    ASSERT_EQ(RunShell(Eval(std::string("--pattern ") + pattern + " --tasks " + dir + "/tasks.jsonl --out " + dir +
                            "/t.json"),
                       &ev),
              0)
        << ev;
    const json t = json::parse(ev)["patterns"][0]["tasks"];
    EXPECT_EQ(t["by_kind"]["own"]["accuracy"], 1.0) << pattern;
    EXPECT_EQ(t["by_kind"]["corrupted"]["accuracy"], 0.0) << pattern;
    EXPECT_EQ(t["accuracy"], 0.5);
    EXPECT_EQ(t["by_kind"]["own"]["by_length_depth"][0]["context"], 60);
    EXPECT_TRUE(FileExists(dir + "/t_tasks_p0.svg"));
  }
}

TEST(EvalCli, LogitsAndGenerateReadAMegatronPrefix) {
  const std::string dir = MakeTempDir();
  auto tokens = ReadTokenArray(std::string(kGentle) + "/tokens.npy", 256);
  ASSERT_TRUE(tokens.ok());
  ASSERT_TRUE(WriteMegatronDataset(dir + "/docs", MegatronDType::kUInt16, {tokens->Row(0)}).ok());
  std::string out;
  ASSERT_EQ(RunShell(std::string("tools/indexcache logits --model ") + kGentle + " --tokens " + kGentle +
                         "/tokens.npy --out " + dir + "/a.npy",
                     &out),
            0)
      << out;
  ASSERT_EQ(RunShell(std::string("tools/indexcache logits --model ") + kGentle + " --tokens " + dir + "/docs --out " +
                         dir + "/b.npy",
                     &out),
            0)
      << out;
  EXPECT_EQ(ReadBytes(dir + "/a.npy"), ReadBytes(dir + "/b.npy"));
  // Documents of different lengths: generate pads --out with -1; logits refuses in one line.
  ASSERT_TRUE(WriteMegatronDataset(dir + "/uneven", MegatronDType::kUInt16, {{1, 2, 3, 4, 5}, {6, 7, 8}}).ok());
  std::string gen;
  ASSERT_EQ(RunShell(std::string("tools/indexcache generate --model ") + kGentle + " --tokens " + dir +
                         "/uneven --max-new 2 --out " + dir + "/g.npy",
                     &gen),
            0)
      << gen;
  auto raw = ReadNpy(dir + "/g.npy");
  ASSERT_TRUE(raw.ok());
  EXPECT_EQ(raw->shape(), (Shape{2, 7}));
  EXPECT_EQ(raw->data<int32_t>()[7 + 5], -1);
  EXPECT_EQ(raw->data<int32_t>()[7 + 6], -1);
  std::string err;
  EXPECT_EQ(RunShell(std::string("tools/indexcache logits --model ") + kGentle + " --tokens " + dir + "/uneven --out " +
                         dir + "/c.npy",
                     &err),
            1);
  EXPECT_NE(err.find("different lengths"), std::string::npos) << err;
  EXPECT_EQ(std::count(err.begin(), err.end(), '\n'), 1) << err;
}

TEST(EvalCli, BadRequestsAreOneLineErrors) {
  for (const auto& [args, needle] : std::vector<std::pair<std::string, std::string>>{
           {"--patterns all,,1/2", "empty entry"},
           {"--patterns all --pattern 1/2", "not both"},
           {"--patterns FSX", "--patterns FSX"},
           {"--tasks /nonexistent/tasks.jsonl", "/nonexistent/tasks.jsonl"},
           {"--bucket -3", "--bucket"},
           {"--overlap --overlap-queries -1", "--overlap-queries"}}) {
    std::string out;
    EXPECT_EQ(RunShell(Eval(args), &out), 1) << args << "\n" << out;
    EXPECT_NE(out.find(needle), std::string::npos) << args << "\n" << out;
    EXPECT_EQ(std::count(out.begin(), out.end(), '\n'), 1) << out;
  }
}

}  // namespace
}  // namespace indexcache
