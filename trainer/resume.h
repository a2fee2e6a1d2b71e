// Choosing and validating the checkpoint `indexcache train --resume` continues from.
//
// A checkpoint is trusted only after every part agrees with the run and with the other parts:
// trainer_state.json's step equals the step in the directory name and lies in [0, steps]; the
// weights and optimizer files carry the same step (and AdamW step) in their metadata; every
// trained tensor is present with exactly the expected shape (not just the element count: a
// transposed `wk` must not load) and is finite; the pattern matches. A checkpoint failing any of
// these is skipped with a warning and the next older one is tried, so one damaged save never
// blocks a resume; when no checkpoint exists at all the run starts fresh.
#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "core/safetensors.h"
#include "core/status.h"
#include "trainer/checkpoint.h"

namespace indexcache {

// What the current run expects of a checkpoint.
struct ResumeExpectations {
  std::vector<std::pair<std::string, Shape>> params;  // trained tensors, exact names and shapes
  int64_t total_steps = 0;                            // the config's `steps`
  std::string pattern;                                // the run's pattern (F/S letters)
};

// One checkpoint read and validated; nothing of the run has been changed yet.
struct ResumePoint {
  std::string path;  // the checkpoint directory
  int64_t step = 0;
  int64_t adamw_step = 0;
  int64_t nonfinite_in_row = 0;
  nlohmann::json cursor;  // the sampler cursor (parsed by the caller, which owns the sampler)
  NamedTensors weights;   // the trained tensors, in ResumeExpectations::params order
};

// Reads `checkpoint` and checks it against `expect`; errors name the file and the field or tensor.
StatusOr<ResumePoint> ReadResumePoint(const CheckpointInfo& checkpoint, const ResumeExpectations& expect);

// The newest checkpoint in `dir` that ReadResumePoint accepts and `apply` (which loads the parts
// the caller owns: optimizer state, sampler cursor) accepts too. Each one skipped adds a line to
// `warnings`. nullopt when `dir` holds no checkpoint; an error when it holds some but none is
// usable (naming the newest one's problem).
StatusOr<std::optional<ResumePoint>> FindResumePoint(const std::string& dir, const ResumeExpectations& expect,
                                                     const std::function<Status(const ResumePoint&)>& apply,
                                                     std::vector<std::string>* warnings);

}  // namespace indexcache
