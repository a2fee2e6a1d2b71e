// IndexCache patterns: which layers run their indexer (F, Full) and which reuse the top-k of the
// nearest preceding Full layer (S, Shared). Layer 0 is always Full.
//
// Sources, highest precedence first:
//   1. the command line: a string of F/S, one per layer ("FSSSFSSS..."), or a uniform ratio
//      "1/N" (layer l is Full iff l % N == 0), or "all" (every layer Full);
//   2. config.json `indexer_types` (["full", "shared", ...], GLM-5.2 style);
//   3. config.json `index_topk_pattern` (a string of F/S, or a list of "F"/"S");
//   4. config.json `index_topk_freq` + `index_skip_topk_offset` (default offset 2):
//      layer l is Shared iff max(l - offset + 1, 0) % freq != 0;
//   5. otherwise every layer is Full.
#pragma once

#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "core/status.h"

namespace indexcache {

class IndexPattern {
 public:
  IndexPattern() = default;
  static IndexPattern AllFull(int num_layers);
  // Parses a command-line pattern: F/S string, "1/N" ratio, "all", or a path ending in .json whose
  // object has a "pattern" string (a search.json of `indexcache search`). Errors name `source`.
  static StatusOr<IndexPattern> Parse(const std::string& spec, int num_layers,
                                      const std::string& source = "--pattern");
  // Resolves the pattern from a config.json object (sources 2-5 above); `source` names the file.
  static StatusOr<IndexPattern> FromConfig(const nlohmann::json& config, int num_layers,
                                           const std::string& source);
  // freq/offset rule as serving engines apply it.
  static IndexPattern FromFrequency(int num_layers, int freq, int offset);

  int num_layers() const { return static_cast<int>(full_.size()); }
  bool is_full(int layer) const { return full_[layer]; }
  int num_full() const;
  // The Full layer whose top-k `layer` uses: itself if Full, else the nearest preceding Full one.
  int source_of(int layer) const;
  // The layers a Full layer f serves: f and the Shared layers after it up to the next Full one.
  std::vector<int> served_by(int full_layer) const;
  std::string ToString() const;  // "FSSF..."
  // If the pattern is exactly the freq/offset rule for some freq >= 1 and offset in [1, layers],
  // returns true and sets them (the smallest offset that fits); used by export.
  bool AsFrequency(int* freq, int* offset) const;

  bool operator==(const IndexPattern& other) const { return full_ == other.full_; }

 private:
  static StatusOr<IndexPattern> FromFlags(std::vector<bool> full, const std::string& source);
  std::vector<bool> full_;
};

}  // namespace indexcache
