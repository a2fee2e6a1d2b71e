#include "eval/retrieval_tasks.h"

#include <algorithm>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "core/file_util.h"
#include "core/test_util.h"
#include "data/token_array.h"

namespace indexcache {
namespace {

using json = nlohmann::json;

const char kFixture[] = "tests/data/glm_shared_bf16";  // 4 layers, pattern FSSF, top-k 12

// Greedy continuation by full forwards (no decode cache): the reference the cached decode must
// reproduce.
std::vector<int32_t> GreedyByFullForwards(const DsaModel& model, std::vector<int32_t> seq, int n) {
  std::vector<int32_t> out;
  const int64_t V = model.config().vocab_size;
  for (int i = 0; i < n; ++i) {
    auto r = model.Forward(seq);
    EXPECT_TRUE(r.ok());
    const float* last = r->logits.data<float>() + (seq.size() - 1) * V;
    const int32_t next = static_cast<int32_t>(std::max_element(last, last + V) - last);
    out.push_back(next);
    seq.push_back(next);
  }
  return out;
}

std::string TaskLine(const std::vector<int32_t>& prompt, const std::vector<int32_t>& answer, const std::string& kind,
                     int64_t context, double depth) {
  return json({{"prompt", prompt}, {"answer", answer}, {"kind", kind}, {"context", context}, {"depth", depth},
               {"note", "free metadata"}})
             .dump() +
         "\n";
}

TEST(RetrievalTasks, ModelsOwnGreedyAnswerScoresAllAndACorruptedOneNothing) {
  auto model = DsaModel::Load(kFixture);
  ASSERT_TRUE(model.ok()) << model.status().ToString();
  auto tokens = ReadTokenArray(std::string(kFixture) + "/tokens.npy", 256);
  ASSERT_TRUE(tokens.ok());
  const std::vector<int32_t> all = tokens->Row(0);
  const std::string dir = MakeTempDir();
  std::string good, bad;
  for (int64_t len : {16, 28}) {  // beyond top-k 12: sparse attention matters
    for (double depth : {0.25, 0.75}) {
      std::vector<int32_t> prompt(all.begin(), all.begin() + len);
      prompt[static_cast<size_t>(depth * (len - 1))] = 7;  // a "needle", so the cells differ
      const std::vector<int32_t> answer = GreedyByFullForwards(*model, prompt, 4);
      good += TaskLine(prompt, answer, "passkey", len, depth);
      std::vector<int32_t> wrong = answer;
      wrong[2] = (wrong[2] + 1) % 256;  // right start, wrong third token: exact match fails
      bad += TaskLine(prompt, wrong, "kv", len, depth);
    }
  }
  ASSERT_TRUE(WriteFileAtomic(dir + "/good.jsonl", good).ok());
  ASSERT_TRUE(WriteFileAtomic(dir + "/bad.jsonl", bad).ok());
  for (const char* file : {"good.jsonl", "bad.jsonl"}) {
    auto tasks = ReadTasks(dir + "/" + file, 256, 1024);
    ASSERT_TRUE(tasks.ok()) << tasks.status().ToString();
    ASSERT_EQ(tasks->size(), 4u);
    TaskReport report;
    for (const RetrievalTask& t : *tasks) {
      auto s = ScoreTask(*model, model->pattern(), t);
      ASSERT_TRUE(s.ok()) << s.status().ToString();
      // The answer loss is the teacher-forced loss of the answer tokens, by hand from full logits.
      std::vector<int32_t> seq = t.prompt;
      seq.insert(seq.end(), t.answer.begin(), t.answer.end());
      auto r = model->Forward(seq);
      ASSERT_TRUE(r.ok());
      const int64_t P = t.prompt.size(), V = 256;
      double want = 0;
      for (size_t i = 0; i < t.answer.size(); ++i) {
        const float* row = r->logits.data<float>() + (P - 1 + i) * V;
        double m = *std::max_element(row, row + V), z = 0;
        for (int64_t v = 0; v < V; ++v) z += std::exp(double(row[v]) - m);
        want += m + std::log(z) - row[t.answer[i]];
      }
      EXPECT_NEAR(s->answer_nll, want, 1e-4 * std::max(1.0, want));
      EXPECT_EQ(s->answer_tokens, 4);
      report.Add(t, *s);
    }
    const json j = report.ToJson();
    const bool is_good = std::string(file) == "good.jsonl";
    EXPECT_EQ(j["accuracy"].get<double>(), is_good ? 1.0 : 0.0) << j.dump();
    EXPECT_EQ(j["count"], 4);
    const std::string kind = is_good ? "passkey" : "kv";
    ASSERT_TRUE(j["by_kind"].contains(kind));
    EXPECT_EQ(j["by_kind"][kind]["by_length_depth"].size(), 4u);
    EXPECT_EQ(j["by_kind"][kind]["by_length_depth"][0]["context"], 16);
    EXPECT_EQ(j["by_kind"][kind]["by_length_depth"][0]["depth"], 0.25);
    EXPECT_EQ(report.AccuracyByLengthDepth().size(), 4u);
  }
}

TEST(RetrievalTasks, BadLinesNameTheLineAndTheField) {
  const std::string dir = MakeTempDir();
  auto expect = [&](const std::string& text, const std::string& fragment) {
    ASSERT_TRUE(WriteFileAtomic(dir + "/t.jsonl", text).ok());
    auto tasks = ReadTasks(dir + "/t.jsonl", 256, 64);
    ASSERT_FALSE(tasks.ok()) << text;
    EXPECT_NE(tasks.status().message().find(fragment), std::string::npos) << tasks.status().message();
    EXPECT_EQ(tasks.status().message().find('\n'), std::string::npos);
  };
  const std::string ok = "{\"prompt\": [1, 2], \"answer\": [3]}\n";
  expect(ok + "{\"prompt\": [1, 2]}\n", "line 2: field 'answer' is missing");
  expect(ok + "\n{\"prompt\": [1, 300], \"answer\": [3]}\n", "line 3: field 'prompt'[1]");
  expect("{\"prompt\": [1], \"answer\": [3], \"depth\": 2}\n", "line 1: field 'depth'");
  expect("{\"prompt\": [1], \"answer\": [3], \"context\": \"long\"}\n", "field 'context'");
  expect("not json\n", "line 1: not a JSON object");
  expect("", "no tasks");
  std::string long_prompt = "{\"prompt\": [";
  for (int i = 0; i < 64; ++i) long_prompt += (i ? ", " : "") + std::to_string(i);
  expect(long_prompt + "], \"answer\": [1]}\n", "field 'prompt' has 64 ids, at most 63");
  EXPECT_FALSE(ReadTasks(dir + "/missing.jsonl", 256, 64).ok());
  // Defaults: kind "task", context = prompt length, no depth.
  ASSERT_TRUE(WriteFileAtomic(dir + "/t.jsonl", ok).ok());
  auto tasks = ReadTasks(dir + "/t.jsonl", 256, 64);
  ASSERT_TRUE(tasks.ok());
  EXPECT_EQ((*tasks)[0].kind, "task");
  EXPECT_EQ((*tasks)[0].context, 2);
  EXPECT_TRUE(std::isnan((*tasks)[0].depth));
}

}  // namespace
}  // namespace indexcache
