// Random weights for a config: synthetic models for benchmarks and tests that need no checkpoint.
#pragma once

#include <cstdint>

#include "model/config.h"
#include "model/weights.h"

namespace indexcache {

// Matrices uniform with std 1/sqrt(fan_in) (activations keep their scale through the layers),
// norm weights 1, biases 0; every layer gets an indexer. Deterministic in `seed`, filled in
// parallel (a V3.2-sized layer has ~0.6 G parameters).
ModelWeights RandomModelWeights(const ModelConfig& config, uint64_t seed);

struct RandomWeightsOptions {
  // The layers to fill, as a pipeline stage loads them (others are left unloaded; the embedding
  // only on the first stage, the final norm and LM head only on the last).
  LayerRange range;
  // Every WeightMatrix but the LM head as FP8 e4m3 with 128 x 128 block scales (as a real FP8
  // checkpoint stores it; WeightMatrix::fp8), for a backend that keeps FP8 resident. The e4m3
  // bytes of all matrices are views of ONE shared pool of random bytes (as large as the largest
  // matrix), each with its own scale: 256 experts per layer then cost no host memory, and the
  // repeated values change no kernel's work. For benchmarks at real size, not for training.
  bool fp8 = false;
};
ModelWeights RandomModelWeights(const ModelConfig& config, uint64_t seed, const RandomWeightsOptions& options);

// A DeepSeek-V3.2-shaped config (hidden 7168, 128 MLA heads, q_lora 1536, kv_lora 512, rope 64,
// indexer 64 x 128, top-k 2048) with `num_layers` layers. The MLP is dense with intermediate
// 18432: the per-token FLOPs of V3.2's MoE (8 routed + 1 shared experts of 2048), without
// routing. `vocab` is kept small so the stack, not the LM head, dominates.
ModelConfig SyntheticV32Config(int num_layers, int64_t vocab = 32000);

// The same with DeepSeek-V3.2's real MoE in every layer: 256 routed experts of intermediate 2048,
// 8 per token, group-limited routing (8 groups, 4 kept), one shared expert, scaling 2.5.
ModelConfig SyntheticV32MoeConfig(int num_layers, int64_t vocab = 32000);

}  // namespace indexcache
