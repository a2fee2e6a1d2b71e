// indexcache train: training-aware IndexCache. Fine-tunes the Full layers' indexers with the
// multi-layer distillation loss (trainer/distill.h) while the main model stays frozen.
//
// One rank per process; each step every rank takes its slice of the global batch
// (data/sequence_sampler.h), accumulates gradients over its micro-batches, and the gradients are
// summed over ranks; then global-norm clipping, AdamW on fp32 master weights, and the model's
// indexers are refreshed from the masters (their top-k drives the next forward).
#pragma once

#include <string>

#include "core/status.h"
#include "trainer/comm.h"
#include "trainer/train_config.h"

namespace indexcache {

struct TrainRunOptions {
  bool resume = false;          // continue from the latest checkpoint in checkpoint.dir
  int64_t stop_after_step = 0;  // > 0: stop (with a checkpoint) once this many steps are done
  // Where the config's `pattern` came from, for messages ("x.textproto: field 'pattern'" or the
  // --set that wrote it); empty: "field 'pattern'".
  std::string pattern_source;
};

// Runs the whole job on this rank. Returns an error Status on this rank's failure; the caller
// ends the job (Communicator::Abort) so no rank is left waiting.
Status RunTraining(const TrainConfig& config, const TrainRunOptions& options, Communicator& comm);

}  // namespace indexcache
