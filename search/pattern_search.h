// Training-free IndexCache: a greedy search for the layers that keep their indexer (Full), by the
// language-model loss on calibration sequences (section 2 of the project's DSA reference notes).
//
//   start:  Full wherever the checkpoint has indexer weights (a layer without them can only be S)
//   step:   for every Full layer except layer 0 and --keep-full, the loss with that layer flipped
//           to Shared (the same sequences for all); commit the lowest (ties: the lower layer)
//   stop:   when `target_full` Full layers remain, or (budget mode) before the step whose best
//           candidate would leave the loss more than budget_pct % above the baseline
//   refine: optionally, at the final count, move one Full layer to a neighbouring Shared position
//           while a move lowers the loss (steepest descent, ties: the lower layers)
//
// Cost: a candidate at layer l runs layers l..N-1 only (search/prefix_cache.h); the cache is
// refreshed from the committed layer on. record.layer_forwards counts the layers run (summed over
// sequences); naive_layer_forwards counts the same evaluations as full forwards.
//
// Ranks: the sequences are split into contiguous blocks, one per rank; each rank scores every
// candidate on its own block and the per-sequence losses are summed over ranks into one table,
// which every rank then adds up in sequence order, so every rank picks the same layer and the
// result is bitwise the same for any number of ranks. Under a pipeline (SearchOptions::stage) the
// blocks are per replica, each stage caches its own layers, a candidate starts on the stage
// holding its first changed layer, and only last stages contribute losses to the table (the
// others add zeros), so the result is still bitwise the same.
#pragma once

#include <functional>
#include <string>
#include <vector>

#include "core/status.h"
#include "model/dsa_model.h"
#include "parallel/stage_forward.h"
#include "search/search_record.h"
#include "trainer/comm.h"

namespace indexcache {

struct SearchOptions {
  int target_full = -1;          // Full layers to keep; -1 in budget mode
  double budget_pct = -1.0;      // >= 0: budget mode
  bool refine = false;
  std::vector<int> keep_full;    // layers that must stay Full besides layer 0
  std::vector<std::string> uniform_ratios = {"1/2", "1/4", "1/8"};
  std::string target_ratio;      // "1/4" when the target came from a ratio: its uniform pattern is that rule
  int stop_after_steps = 0;      // > 0: return after this many new steps (the record stays resumable)
  int64_t device_budget_bytes = -1;  // prefix cache on the device; the rest on the host
  // Pipeline x data parallelism: this rank's stage (null split: all layers here) and its replica.
  // The sequences are split into one block per replica; without a pipeline every rank is a replica.
  StageContext stage;
  int replica = -1, replicas = -1;  // -1: comm.rank() / comm.world()
};

// What the search reports as it goes (rank 0 prints it).
struct SearchProgress {
  std::string phase;       // "baseline", "uniform", "greedy", "refine"
  int step = 0;            // 1-based step within the whole search
  int steps_total = 0;     // greedy steps needed (refine steps are open-ended)
  int candidate = 0, candidates = 0;
  int best_layer = -1;     // best so far in this step ("from" for refine)
  double best_loss = 0.0;
  double seconds_step = 0.0, eta_seconds = -1.0;
  bool step_done = false;
};

// The uniform interleaving with `num_full` Full layers among n: the "1/N" rule when `ratio` is
// given (layer l is Full iff l % N == 0), else Full at floor(i * n / num_full) for i < num_full.
std::string UniformPattern(int n, int num_full, const std::string& ratio);

// Full layers a "--target" keeps among n: "1/N" -> ceil(n / N); "K" -> K. Errors name --target.
StatusOr<int> ParseTarget(const std::string& spec, int n);

// Runs (or continues) the search on this rank's `sequences` (its block of the calibration set;
// `total_sequences` over all ranks, all of the same length). `record` holds what is already
// decided (empty settings: a new search) and is updated after every step, when `save` is called
// (on every rank; the caller writes on one). On return the record is done unless stop_after_steps
// stopped it.
Status RunPatternSearch(const DsaModel& model, std::vector<std::vector<int32_t>> sequences, int64_t total_sequences,
                        const SearchOptions& options, Communicator& comm, SearchRecord* record,
                        const std::function<Status(const SearchRecord&)>& save,
                        const std::function<void(const SearchProgress&)>& progress);

}  // namespace indexcache
