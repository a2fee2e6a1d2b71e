// The pipeline x data-parallel plan of a DSA model on N GPUs: how many pipeline stages P (the
// rest, D = N / P, data-parallel replicas), which contiguous layers each stage holds, its memory
// and its time per micro-batch, and the estimated step time. A pure function of the model config,
// the IndexCache pattern and per-item costs (parallel/layer_costs.h: estimated from measured
// throughputs, or measured by the runtime and passed in).
//
// Rules:
//   - P is the smallest divisor of N whose best split fits every stage in memory (or
//     `pipeline_stages` when given); within P the split minimises the slowest stage.
//   - The embedding stays with layer 0, the head with the last layer.
//   - Between stages travel the hidden state and the indices buffer: a stage whose first layer is
//     Shared needs the top-k of the preceding Full layer (recorded per stage). In search mode any
//     layer may turn Shared, so every boundary carries indices.
//   - Train: a Full layer's loss needs the attention of every layer it serves, so a stage may
//     only begin at a Full layer (no Full layer is separated from its Shared layers).
//   - Micro-batches are sequences: M = ceil(sequences / D) per replica. A pipeline of stage times
//     t_s runs M of them in sum(t_s) + (M - 1) max(t_s); with balanced stages that is
//     (M + P - 1) t, i.e. a bubble efficiency of M / (M + P - 1).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "model/config.h"
#include "model/pattern.h"
#include "parallel/layer_costs.h"

namespace indexcache {

struct PlanRequest {
  int64_t gpus = 1;
  int64_t gpu_memory_bytes = 0;
  int64_t reserve_bytes = 0;      // per GPU: CUDA context, cuBLAS/NCCL buffers, allocator slack
  int64_t pipeline_stages = 0;    // 0: the smallest P that fits
  int64_t sequences = 1;          // per step over all replicas (train: global batch; eval/search: the data set)
  int64_t gpus_per_node = 8;      // boundaries cross nodes when N > this (then the slower link is assumed)
  CostOptions costs;              // mode, seq_len, chunk, device; sequences_per_replica is set by the planner
};

struct PlannedStage {
  int first_layer = 0, last_layer = 0;  // inclusive
  bool has_embedding = false, has_head = false;
  int64_t weight_bytes = 0;
  int64_t workspace_bytes = 0;  // per-item workspace + the per-stage overhead
  double seconds = 0;           // per micro-batch, including receiving its input
  double seconds_fp8_gemm = 0;
  std::string pattern;          // F/S of its layers
  bool receives_indices = false;  // its first layer is Shared (or may become Shared: search)
  int indices_from_layer = -1;    // the Full layer whose top-k it receives (-1: none or varies)
  int64_t full_indexer_parameters = 0;  // trained here (train mode)
};

struct StagePlan {
  PlanMode mode = PlanMode::kEval;
  std::vector<PlannedStage> stages;
  int64_t pipeline_stages = 1, data_parallel = 1, micro_batches = 1;
  double pipeline_efficiency = 1;  // M / (M + P - 1)
  double balance = 1;              // mean stage time / slowest stage time
  double micro_batch_pipeline_s = 0;  // M micro-batches through the pipeline
  double allreduce_s = 0;          // train: indexer gradients over D replicas
  double step_time_s = 0;          // train: one optimizer step; eval: all sequences; search: the first greedy step
  double step_time_fp8_gemm_s = 0;
  double full_forward_s = 0;       // one forward of all sequences (search: building the prefix cache)
  double tokens_per_s = 0;         // train/eval: sequences x T / step
  int64_t boundary_bytes = 0;      // per micro-batch and boundary
  int64_t largest_gpu_bytes = 0;   // max over stages of weights + workspace + reserve
  std::vector<std::string> notes;
};

// Splits `costs` into `stages` stages under the mode's cut rule and the memory capacity
// (gpu memory - reserve - per-stage overhead). For a runtime with measured per-item costs.
StatusOr<std::vector<PlannedStage>> SplitStages(const ModelCosts& costs, const IndexPattern& pattern, PlanMode mode,
                                                int stages, int64_t capacity_bytes);

// The whole plan from the config: chooses P and D, splits, estimates the step. Errors are one
// line; a model that cannot fit names the shortfall ("needs X GB per GPU, has Y").
StatusOr<StagePlan> PlanPipeline(const ModelConfig& config, const IndexPattern& pattern, const PlanRequest& request);

}  // namespace indexcache
