// MoE routing of deepseek_v3-family models (sigmoid scores, group-limited top-k), CPU reference.
//
// scores = sigmoid(logits); choice = scores + e_score_correction_bias (the bias only CHOOSES);
// each of n_group groups is rated by the sum of its two best choice scores; the topk_group best
// groups stay; the top `topk` experts among them are chosen; their weights are the UNBIASED scores,
// divided by their sum (+1e-20) if norm_topk_prob, times routed_scaling_factor.
// Ties prefer the lower expert / group index.
#pragma once

#include <cstdint>

namespace indexcache {

struct MoeRoutingParams {
  const float* logits = nullptr;  // [T, E] router logits (fp32)
  const float* bias = nullptr;    // [E] e_score_correction_bias, or nullptr for zeros
  int64_t T = 0, E = 0, n_group = 1, topk_group = 1, topk = 0;
  bool norm_topk_prob = true;
  float routed_scaling_factor = 1.0f;
  int32_t* out_experts = nullptr;  // [T, topk]
  float* out_weights = nullptr;    // [T, topk]
};

void MoeRoutingCpu(const MoeRoutingParams& p);

}  // namespace indexcache
