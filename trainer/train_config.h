// Loading the trainer's configuration (trainer/train_config.proto) from a text-format file.
//
// Three stages, each failing with one line that names where the problem is:
//   1. parse the text format: syntax errors, unknown fields and bad enum values name
//      `file:line:column` and the field;
//   2. apply `--set field=value` overrides in order (dotted paths into sub-messages:
//      `optimizer.lr=3e-4`, `loss_mode=SPARSE`, `checkpoint.dir=/tmp/ckpt`); an unknown field or
//      a value of the wrong type names the override;
//   3. fill defaults for absent fields (see the .proto) and validate; errors name the field and
//      where its value came from (the file, or the `--set` that gave it).
// Paths in the config are used as written (relative to the working directory).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "core/status.h"
#include "trainer/train_config.pb.h"

namespace indexcache {

// Reads `path` and runs the three stages above.
StatusOr<TrainConfig> LoadTrainConfig(const std::string& path,
                                      const std::vector<std::string>& overrides = {});

// The same on text already in memory; `source` names it in errors (a checkpoint's saved config
// is reloaded through this).
StatusOr<TrainConfig> ParseTrainConfig(const std::string& text, const std::string& source,
                                       const std::vector<std::string>& overrides = {});

// Applies one `field=value` override to `config` (stage 2 alone; no validation).
Status ApplyOverride(const std::string& override_text, TrainConfig* config);

// Stage 3 alone: fills absent fields with defaults, then validates. `source` names the config
// in errors; a field that one of `overrides` set is blamed on that `--set` instead.
Status ResolveTrainConfig(TrainConfig* config, const std::string& source,
                          const std::vector<std::string>& overrides = {});

// The resolved config in text format, every field explicit; the trainer prints it at start
// and stores it in each checkpoint.
std::string ResolvedConfigText(const TrainConfig& config);

// Checks that the ranks form parallel.pipeline_stages x D replicas and that global_batch splits
// evenly over the D replicas in micro_batch sequences.
Status CheckWorldSize(const TrainConfig& config, int world_size);

// Micro-batches each rank accumulates per optimizer step (after CheckWorldSize passed).
int64_t GradAccumulationSteps(const TrainConfig& config, int world_size);

// Name of the loss mode as written in configs ("DENSE" / "SPARSE").
std::string LossModeName(TrainConfig::LossMode mode);

}  // namespace indexcache
