// One sequence through this rank's pipeline stage: receive the residual stream [T, hidden] and
// the indices buffer [T, k] from the previous stage, run the stage's layers, send both on.
//
// The indices buffer travels with the stream because a stage that begins with a Shared layer
// reuses the top-k of a Full layer on an earlier stage (SGLang's pipeline bug #28532 dropped it).
// Transfers go through host MPI (Communicator::Send/Recv): the stream as f32, the indices as
// int32. Blocking sends and receives make consecutive sequences stream through the stages back
// to back (a forward-only GPipe schedule: stage s works on sequence i while s + 1 works on i - 1).
// With a StageLink (GPUs) the stream and indices cross device to device in the backend's dtypes
// (bf16, int32) instead; StageForward::topk_in is then a backend tensor.
#pragma once

#include <cstdint>
#include <vector>

#include "core/status.h"
#include "model/dsa_model.h"
#include "parallel/stage_link.h"
#include "parallel/stage_split.h"
#include "trainer/comm.h"

namespace indexcache {

// Where a stage's time went: its own layers, and waiting for (or handing off) activations.
// Waiting includes the pipeline's fill and drain.
struct PipelineTimes {
  double compute_s = 0.0;
  double wait_s = 0.0;
  double busy_fraction() const { return compute_s + wait_s > 0 ? compute_s / (compute_s + wait_s) : 1.0; }
};

struct StageContext {
  const StageSplit* split = nullptr;  // null: no pipeline (the whole model on this rank)
  int stage = 0;
  Communicator* pipeline = nullptr;   // this replica's pipeline, rank == stage
  PipelineTimes* times = nullptr;     // optional
  // Optional: moves the stream and indices device to device (NCCL) instead of through host MPI.
  StageLink* link = nullptr;
  bool last_stage() const { return !split || stage == split->num_stages() - 1; }
  LayerRange layers(int num_layers) const { return split ? split->stages[stage] : LayerRange{0, num_layers}; }
};

struct StageForward {
  bool ran = false;      // false: the forward starts after this stage's layers (nothing ran here)
  ForwardResult result;  // this stage's traces; token_nll / logits on the last stage only
  Tensor topk_in;        // the indices buffer received with the stream (when the stage received one)
};

// Runs layers [opts.start_layer, num_layers) as far as this stage holds them: a stage before
// start_layer's stage does nothing; start_layer's stage starts from opts.hidden_in /
// opts.initial_topk (or the tokens); later stages start from what the previous stage sent. Every
// stage but the last sends its stream and indices buffer on. opts.end_layer must be -1.
StatusOr<StageForward> ForwardStage(const DsaModel& model, const StageContext& ctx, const std::vector<int32_t>& tokens,
                                    ForwardOptions opts);

}  // namespace indexcache
