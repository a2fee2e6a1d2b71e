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

// A DeepSeek-V3.2-shaped config (hidden 7168, 128 MLA heads, q_lora 1536, kv_lora 512, rope 64,
// indexer 64 x 128, top-k 2048) with `num_layers` layers. The MLP is dense with intermediate
// 18432: the per-token FLOPs of V3.2's MoE (8 routed + 1 shared experts of 2048), without
// routing. `vocab` is kept small so the stack, not the LM head, dominates.
ModelConfig SyntheticV32Config(int num_layers, int64_t vocab = 32000);

}  // namespace indexcache
