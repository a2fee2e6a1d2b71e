// MoE routing of deepseek_v3-family models (sigmoid scores, group-limited top-k), CPU reference.
//
// scores = sigmoid(logits); choice = scores + e_score_correction_bias (the bias only CHOOSES);
// each of n_group groups is rated by the sum of its two best choice scores; the topk_group best
// groups stay; the top `topk` experts among them are chosen; their weights are the UNBIASED scores,
// divided by their sum (+1e-20) if norm_topk_prob, times routed_scaling_factor.
// Ties prefer the lower expert / group index.
//
// Non-finite inputs have one defined outcome, which the CUDA kernel (kernels/moe_routing_cuda.h)
// reproduces exactly: a NaN choice score (NaN logit or bias) RANKS as -inf, both inside a group's
// rating and in the final top-k (a NaN group rating, e.g. +inf + -inf from an infinite bias, ranks
// as -inf too), and ties among equal ranks still go to the lower index. A NaN-scored expert can
// thus only be chosen when fewer than topk experts rank above -inf; its weight is then NaN and the
// normalisation spreads it to the token's other weights, so the forward's non-finite check names
// the layer instead of a silently wrong selection. +-inf logits are ordinary: sigmoid gives 1 / 0.
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

// sigmoid(x) through fp64, rounded once to fp32. Why fp64: the fp32 expf of glibc and of CUDA may
// differ by an ulp, which would let the device pick a different expert than this reference on a
// near tie; the fp64 value rounded to fp32 is the same on both (up to double-rounding cases far
// rarer than any test can meet). The CUDA kernel evaluates the same expression.
inline float MoeSigmoid(float x) { return static_cast<float>(1.0 / (1.0 + __builtin_exp(-static_cast<double>(x)))); }

// The rank of a choice score: NaN ranks as -inf (see above). Shared with the CUDA kernel.
inline float MoeRankKey(float choice) { return choice != choice ? -__builtin_inff() : choice; }

}  // namespace indexcache
