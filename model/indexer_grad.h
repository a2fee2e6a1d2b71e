// The lightning indexer as a trainable function of its weights (CPU, fp32, Eigen).
//
// Distillation trains only the indexer; its inputs are detached model activations: x, the
// input_layernorm output (feeds wk and weights_proj), and q_lat, the q_a_layernorm output (feeds
// wq_b). Forward: q = rope(q_lat wq_b^T), k = rope(LayerNorm(x wk^T)), w = (x weights_proj^T) *
// n_heads^-0.5 — the same math as the model's forward. Backward maps the loss gradients with
// respect to q, k, w (kernels/distill_loss.h) to gradients of wq_b, wk, k_norm.{weight,bias} and
// weights_proj.
#pragma once

#include "kernels/rope.h"
#include "model/config.h"
#include "model/weights.h"

namespace indexcache {

struct IndexerActivations {
  Matrix q;       // [T, HI * D] rope applied
  Matrix k;       // [T, D]      rope applied
  Matrix w;       // [T, HI]     n_heads^-0.5 folded in
  Matrix k_hat;   // [T, D]      LayerNorm's normalised input, before weight and bias
  Vector k_inv;   // [T]         LayerNorm's 1 / sqrt(var + eps)
};

struct IndexerGrads {
  Matrix wq_b, wk, weights_proj;
  Vector k_norm_weight, k_norm_bias;
  // Zeros shaped like `w`.
  static IndexerGrads ZerosLike(const IndexerWeights& w);
  void Add(const IndexerGrads& other);
};

IndexerActivations IndexerForward(const ModelConfig& c, const IndexerWeights& w, const Matrix& x, const Matrix& q_lat,
                                  const RopeTable& rope);

// Accumulates into `grads`. dq: [T, HI * D], dk: [T, D], dw: [T, HI] (gradients after rope).
void IndexerBackward(const ModelConfig& c, const IndexerWeights& w, const Matrix& x, const Matrix& q_lat,
                     const RopeTable& rope, const IndexerActivations& act, const Matrix& dq, const Matrix& dk,
                     const Matrix& dw, IndexerGrads* grads);

}  // namespace indexcache
