// StageSplit: which contiguous layers each pipeline stage holds.
//
// ChooseStageSplit() is the one place eval, search and train get their split from. Today it
// balances stages by layer count (or takes explicit boundaries); the cost-model planner
// (`indexcache plan`) is meant to replace its body and keep its signature.
#pragma once

#include <string>
#include <vector>

#include "core/status.h"
#include "model/config.h"
#include "model/pattern.h"
#include "model/weights.h"

namespace indexcache {

struct StageSplit {
  std::vector<LayerRange> stages;  // contiguous, in order, covering [0, num_layers)
  int num_stages() const { return static_cast<int>(stages.size()); }
  int StageOf(int layer) const;    // -1 outside the model
  std::string ToString() const;    // "[0, 3) [3, 6) [6, 8)"
};

// P contiguous stages of nearly equal layer counts (the first N % P stages take one more).
StatusOr<StageSplit> BalancedStageSplit(int num_layers, int stages);

// Stages from the first layer of every stage after the first ("3,6": [0,3) [3,6) [6,N)); the
// boundaries must increase strictly inside (0, num_layers). `what` names the flag or field.
StatusOr<StageSplit> StageSplitFromBoundaries(int num_layers, const std::vector<int>& boundaries,
                                              const std::string& what);

// Distillation scores a Full layer against the attention of every layer it serves, so those
// layers must sit in the Full layer's stage: every stage must begin with a Full layer.
Status CheckSplitKeepsServedLayers(const StageSplit& split, const IndexPattern& pattern, const std::string& what);

struct StageSplitRequest {
  int stages = 1;
  std::vector<int> boundaries;           // explicit: used as given (checked)
  const IndexPattern* pattern = nullptr;  // set: every stage must begin with a Full layer (training)
  std::string what = "--stage-boundaries";  // the flag or field named by errors
};

// The split for a model: explicit boundaries when given, else balanced by layer count; for
// training (pattern set) the balanced boundaries move to the nearest Full layer (ties: earlier).
StatusOr<StageSplit> ChooseStageSplit(const ModelConfig& config, const StageSplitRequest& request);

// "3,6" -> {3, 6}; errors name `what`.
StatusOr<std::vector<int>> ParseStageBoundaries(const std::string& spec, const std::string& what);

}  // namespace indexcache
