// Retrieval tasks (passkey, needle-in-a-haystack, key-value recall): a prompt whose answer the
// model has to find in its own context, the long-context ability IndexCache must not lose.
//
// File format (JSON lines; tools/make_tasks.py writes it), one task per line:
//   {"prompt": [ids], "answer": [ids], "kind": "passkey", "context": 4096, "depth": 0.5, ...}
// prompt and answer are required; kind (default "task"), context (default: the prompt's length)
// and depth (default: none) group the scores; other fields are free metadata and ignored.
//
// A task is scored twice under a pattern:
//   * exact match: greedy decoding through the decode cache (prefill the prompt, then one token
//     per step) reproduces the answer's ids exactly;
//   * answer loss: teacher-forced next-token loss of the answer tokens after the prompt.
#pragma once

#include <cmath>
#include <cstdint>
#include <map>
#include <string>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "core/status.h"
#include "model/dsa_model.h"
#include "model/pattern.h"

namespace indexcache {

constexpr int64_t kMaxTasks = 100000;          // tasks per file
constexpr int64_t kMaxAnswerTokens = 4096;     // tokens per answer
constexpr int64_t kMaxTaskFileBytes = int64_t{1} << 31;

struct RetrievalTask {
  std::vector<int32_t> prompt, answer;
  std::string kind = "task";
  int64_t context = 0;   // the length the task was built for (default: prompt length)
  double depth = NAN;    // where the needle sits, 0 = start, 1 = end; NaN when not given
  int64_t line = 0;      // 1-based line in the file, for messages
};

// Reads and checks a task file: ids in [0, vocab_size), prompt + answer at most max_tokens
// tokens. Errors name the file, the line and the field.
StatusOr<std::vector<RetrievalTask>> ReadTasks(const std::string& path, int64_t vocab_size, int64_t max_tokens);

struct TaskScore {
  bool exact = false;
  double answer_nll = 0.0;    // summed over the answer tokens (nats)
  int64_t answer_tokens = 0;
};

StatusOr<TaskScore> ScoreTask(const DsaModel& model, const IndexPattern& pattern, const RetrievalTask& task);

// Scores grouped by kind and by (context, depth).
class TaskReport {
 public:
  void Add(const RetrievalTask& task, const TaskScore& score);
  // {"count", "accuracy", "answer_loss", "by_kind": {kind: {"count", "accuracy", "answer_loss",
  //  "by_length_depth": [{"context", "depth", "count", "accuracy", "answer_loss"}, ...]}}}
  // answer_loss is nats per answer token; depth is null when the tasks gave none.
  nlohmann::json ToJson() const;
  // Accuracy over all kinds per (context, depth) cell, for the picture.
  std::map<std::pair<int64_t, double>, double> AccuracyByLengthDepth() const;

 private:
  struct Cell {
    int64_t count = 0, exact = 0, answer_tokens = 0;
    double answer_nll = 0.0;
    void Add(const TaskScore& s);
    nlohmann::json ToJson() const;
  };
  Cell all_;
  std::map<std::string, Cell> by_kind_;
  // depth key: NaN is stored as -1 (depths are in [0, 1]).
  std::map<std::string, std::map<std::pair<int64_t, double>, Cell>> by_cell_;
  std::map<std::pair<int64_t, double>, Cell> cells_;
};

}  // namespace indexcache
