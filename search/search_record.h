// SearchRecord: everything a pattern search has decided so far, as written to search.json after
// every step (atomically) and read back by --resume. Other tools read these keys: pattern,
// full_layers, baseline_loss, final_loss, steps[{layer, loss, candidates{"<layer>": loss}}],
// uniform{pattern, loss}, layer_forwards, naive_layer_forwards, config_keys{index_topk_pattern,
// indexer_types}.
//
// The record holds no timings, so a search stopped and resumed writes byte-identical JSON to an
// uninterrupted one; timings go to the progress lines.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "core/status.h"
#include "model/pattern.h"

namespace indexcache {

// One committed decision: a greedy flip of `layer` to Shared, or a refine move of a Full layer
// from `from` to `to` (layer = -1 then).
struct SearchStep {
  std::string kind;  // "greedy" or "refine"
  int layer = -1;
  int from = -1, to = -1;
  double loss = 0.0;                         // calibration loss after the step
  std::map<std::string, double> candidates;  // every candidate's loss: "7" (greedy) or "7>8" (refine)
};

struct UniformPoint {
  std::string ratio;    // "1/4", or "K=5" for a count target
  std::string pattern;  // empty when the uniform pattern needs a layer without indexer weights
  double loss = 0.0;
};

struct SearchRecord {
  nlohmann::json settings;      // what the search was asked (model, data, seq_len, target, ...): --resume checks it
  std::string start_pattern;    // Full wherever the checkpoint has indexer weights
  double baseline_loss = 0.0;   // loss of start_pattern (all-F for a checkpoint with every indexer)
  std::vector<SearchStep> steps;
  std::vector<UniformPoint> uniform_ratios;  // 1/2, 1/4, 1/8
  std::optional<UniformPoint> uniform;       // the uniform pattern with the target's Full count
  int64_t layer_forwards = 0, naive_layer_forwards = 0;
  bool done = false;
  std::string greedy_pattern;  // set when greedy finished
  double greedy_loss = 0.0;

  // The pattern after applying every step to start_pattern.
  StatusOr<IndexPattern> CurrentPattern() const;
  // The loss of CurrentPattern(): the last step's, or the baseline.
  double current_loss() const { return steps.empty() ? baseline_loss : steps.back().loss; }

  nlohmann::json ToJson() const;
  // `source` names the file in errors.
  static StatusOr<SearchRecord> FromJson(const nlohmann::json& j, const std::string& source);
};

// Reads a search.json for --resume. Errors name the file and the field.
StatusOr<SearchRecord> ReadSearchRecord(const std::string& path);
// Writes JSON atomically (temp file, fsync, rename).
Status WriteSearchRecord(const std::string& path, const SearchRecord& record);

}  // namespace indexcache
