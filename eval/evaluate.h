// EvaluatePatterns: everything `indexcache eval` measures, for several IndexCache patterns on the
// same windows, as one JSON document. The command (tools/cmd_eval.cc) only parses flags, prints
// the table and writes files; the numbers come from here so tests can check them directly.
//
// Per pattern: mean next-token loss and perplexity over all windows, optionally the loss by
// position bucket (eval/position_loss.h), the retrieval tasks (eval/retrieval_tasks.h) and the
// attention mass recall per layer (eval/topk_probe.h). Optionally, once: the pairwise top-k
// overlap of the layers under all-F (Full wherever the checkpoint has indexer weights).
#pragma once

#include <functional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "core/status.h"
#include "data/eval_windows.h"
#include "eval/retrieval_tasks.h"
#include "model/dsa_model.h"
#include "model/pattern.h"
#include "parallel/stage_forward.h"
#include "trainer/comm.h"

namespace indexcache {

struct NamedPattern {
  std::string name;  // as the user wrote it ("1/4", "search.json", "FSSF")
  IndexPattern pattern;
};

// Pipeline and data parallelism: this rank is `stage` of replica `replica` (parallel/pipeline_grid.h).
// Each replica takes one contiguous block of windows through its pipeline; the last stages'
// per-token losses are summed over all ranks (a window's row is non-zero on one rank only), so
// every rank returns the same JSON, bit for bit the same as one rank's.
struct EvalParallel {
  StageContext stage;          // split == nullptr: the whole model on this rank
  Communicator* world = nullptr;
  int replica = 0, replicas = 1;
};

struct EvalOptions {
  int64_t bucket = 0;               // > 0: by_position with buckets of this many positions
  bool overlap = false;             // top-level "overlap" and per-pattern "mass_recall"
  int64_t overlap_queries = 64;     // sampled queries per window (0: every eligible one)
  int64_t overlap_windows = 4;      // windows probed (the first ones)
  const std::vector<RetrievalTask>* tasks = nullptr;
  const EvalParallel* parallel = nullptr;  // null: one rank, all layers
  // Called after each unit of work with a short description ("pattern 2/3: window 10/64").
  std::function<void(const std::string&)> progress;
};

// The layers Full wherever the checkpoint has indexer weights (the search's all-F).
IndexPattern AllFullWhereIndexed(const DsaModel& model);

// {"seq_len", "sequences", "predicted_tokens", "bucket"?, "overlap"?, "overlap_pattern"?,
//  "overlap_queries"?, "patterns": [{"name", "pattern", "loss", "ppl", "difference",
//  "by_position"?: [{"begin", "end", "count", "loss"}], "tasks"?, "mass_recall"?}]}
// "difference" is loss minus the first pattern's loss.
StatusOr<nlohmann::json> EvaluatePatterns(const DsaModel& model, const std::vector<EvalWindow>& windows,
                                          const std::vector<NamedPattern>& patterns, const EvalOptions& options);

}  // namespace indexcache
