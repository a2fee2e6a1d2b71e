#include "parallel/stage_split.h"

#include <cstdlib>
#include <sstream>

namespace indexcache {

int StageSplit::StageOf(int layer) const {
  for (int s = 0; s < num_stages(); ++s) {
    if (layer >= stages[s].begin && layer < stages[s].end) return s;
  }
  return -1;
}

std::string StageSplit::ToString() const {
  std::string out;
  for (const LayerRange& r : stages) {
    if (!out.empty()) out += " ";
    out += "[" + std::to_string(r.begin) + ", " + std::to_string(r.end) + ")";
  }
  return out;
}

namespace {

StageSplit FromFirstLayers(int num_layers, const std::vector<int>& firsts) {
  StageSplit split;
  for (size_t s = 0; s < firsts.size(); ++s) {
    split.stages.push_back({firsts[s], s + 1 < firsts.size() ? firsts[s + 1] : num_layers});
  }
  return split;
}

}  // namespace

StatusOr<StageSplit> BalancedStageSplit(int num_layers, int stages) {
  if (stages < 1 || stages > num_layers) {
    return InvalidArgument("--pipeline-stages " + std::to_string(stages) + " must be between 1 and the model's " +
                           std::to_string(num_layers) + " layers");
  }
  std::vector<int> firsts;
  int layer = 0;
  for (int s = 0; s < stages; ++s) {
    firsts.push_back(layer);
    layer += num_layers / stages + (s < num_layers % stages ? 1 : 0);
  }
  return FromFirstLayers(num_layers, firsts);
}

StatusOr<StageSplit> StageSplitFromBoundaries(int num_layers, const std::vector<int>& boundaries,
                                              const std::string& what) {
  std::vector<int> firsts = {0};
  for (int b : boundaries) {
    if (b <= firsts.back() || b >= num_layers) {
      return InvalidArgument(what + ": boundaries must increase strictly between 1 and " +
                             std::to_string(num_layers - 1) + " (the first layer of each stage after the first)");
    }
    firsts.push_back(b);
  }
  return FromFirstLayers(num_layers, firsts);
}

Status CheckSplitKeepsServedLayers(const StageSplit& split, const IndexPattern& pattern, const std::string& what) {
  for (const LayerRange& r : split.stages) {
    if (!pattern.is_full(r.begin)) {
      return InvalidArgument(what + ": the stage " + "[" + std::to_string(r.begin) + ", " + std::to_string(r.end) +
                             ") begins with Shared layer " + std::to_string(r.begin) + " of pattern " +
                             pattern.ToString() + ", separating it from Full layer " +
                             std::to_string(pattern.source_of(r.begin)) +
                             " whose distillation needs its attention; begin every stage at a Full layer");
    }
  }
  return Status::Ok();
}

StatusOr<StageSplit> ChooseStageSplit(const ModelConfig& config, const StageSplitRequest& request) {
  const int n = static_cast<int>(config.num_layers);
  StageSplit split;
  if (!request.boundaries.empty()) {
    if (static_cast<int>(request.boundaries.size()) != request.stages - 1) {
      return InvalidArgument(request.what + ": " + std::to_string(request.boundaries.size()) + " boundaries for " +
                             std::to_string(request.stages) + " stages (give stages - 1)");
    }
    ASSIGN_OR_RETURN(split, StageSplitFromBoundaries(n, request.boundaries, request.what));
  } else {
    ASSIGN_OR_RETURN(split, BalancedStageSplit(n, request.stages));
    if (request.pattern) {  // move each boundary to the nearest Full layer
      std::vector<int> firsts;
      for (int s = 1; s < split.num_stages(); ++s) {
        const int want = split.stages[s].begin;
        int best = -1;
        for (int l = 1; l < n; ++l) {
          if (!request.pattern->is_full(l) || (!firsts.empty() && l <= firsts.back())) continue;
          if (best < 0 || std::abs(l - want) < std::abs(best - want)) best = l;
        }
        if (best < 0) {
          return InvalidArgument("pattern " + request.pattern->ToString() + " has too few Full layers for " +
                                 std::to_string(request.stages) + " pipeline stages that each begin with a Full layer");
        }
        firsts.push_back(best);
      }
      ASSIGN_OR_RETURN(split, StageSplitFromBoundaries(n, firsts, request.what));
    }
  }
  if (request.pattern) RETURN_IF_ERROR(CheckSplitKeepsServedLayers(split, *request.pattern, request.what));
  return split;
}

StatusOr<std::vector<int>> ParseStageBoundaries(const std::string& spec, const std::string& what) {
  std::vector<int> out;
  std::stringstream ss(spec);
  std::string item;
  while (std::getline(ss, item, ',')) {
    if (item.empty() || item.size() > 6 || item.find_first_not_of("0123456789") != std::string::npos) {
      return InvalidArgument(what + " must be a comma-separated list of layer numbers, got '" + spec + "'");
    }
    out.push_back(std::atoi(item.c_str()));
  }
  return out;
}

}  // namespace indexcache
