// The per-item cost model of the stage planner: for the embedding, each decoder layer and the
// head, the bytes it keeps resident on a GPU, the mode's per-item workspace, and its time per
// micro-batch (one sequence of T tokens); plus the per-stage overhead every stage pays once.
//
// Memory (bytes; T tokens per sequence, H hidden, k index_topk, C query chunk, d = kv_lora_rank +
// qk_rope_head_dim the MLA latent, M sequences per data-parallel replica):
//   weights     FP8 tensors stay FP8 (1 B + fp32 per 128x128 block), the rest bf16
//   per stage   2 x T x (2H + 4k)          hidden state and indices buffer, in and out
//             + T x 2 x (d + index_head_dim)  one layer's keys for the whole sequence
//             + C x 2 x (heads x (qk_head + 2d + v) + q_lora + d + idx_heads x (idx_dim + 1)
//                        + 3 x mlp_width + 4H)      one query chunk's activations
//             + 2 x the largest FP8 matrix in bf16 (just-in-time dequantisation scratch)
//             + train: 2 x 132 x T x 4          the fused loss kernel's row workspace
//   per layer   eval:   0
//               search: M x T x (2H + 4k)     the prefix cache (input stream + indices)
//               train:  T x 2 x (H + d)       each served layer's input stream and latents, from
//                                             which the teachers are recomputed in query chunks
//                     + Full: T x 4 x (k + index_head_dim) + 16 B x indexer parameters
//                                             (its top-k and fp32 keys; fp32 master, grad, m, v)
//   head        eval/search: C x vocab x 4    one chunk of fp32 logits; train: no head
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "model/config.h"
#include "parallel/measured_throughput.h"

namespace indexcache {

enum class PlanMode { kTrain, kEval, kSearch };
const char* PlanModeName(PlanMode mode);
StatusOr<PlanMode> ParsePlanMode(const std::string& name);

struct CostOptions {
  PlanMode mode = PlanMode::kEval;
  int64_t seq_len = 0;                // T, tokens per sequence (micro-batch)
  int64_t chunk = 8192;               // C, query rows per forward piece (min with T)
  int64_t sequences_per_replica = 1;  // M; sizes the search's prefix cache
  bool dense_loss = true;             // train: the trainer's default loss mode
  DeviceProfile device;
};

// One schedulable unit. Stages are contiguous runs of items.
struct ItemCost {
  std::string name;   // "embedding", "layer 12", "head"
  int layer = -1;     // -1 embedding, num_layers head
  bool full = false;  // a Full layer (runs its indexer)
  int64_t weight_bytes = 0;
  int64_t workspace_bytes = 0;  // the mode's per-item workspace (cache, teacher state, logits)
  int64_t indexer_parameters = 0;
  double seconds = 0;           // per micro-batch, bf16 GEMMs as measured
  double seconds_fp8_gemm = 0;  // the same with GEMMs at the fp8 ceiling (a projection)
};

struct ModelCosts {
  std::vector<ItemCost> items;  // embedding, layers 0..N-1, head (no head in train mode)
  int64_t stage_overhead_bytes = 0;
  int64_t boundary_bytes = 0;  // hidden state + indices sent per micro-batch between stages
  int num_layers = 0;
};

// Costs of every item under `pattern` (which layers are Full). Errors name the option at fault
// when a size overflows.
StatusOr<ModelCosts> EstimateCosts(const ModelConfig& config, const IndexPattern& pattern, const CostOptions& options);

}  // namespace indexcache
