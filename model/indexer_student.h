// The indexer as the student of distillation, on any backend: forward from detached inputs to
// rope'd q, k and head weights w, and backward from the loss gradients to its weight gradients.
//
// The same math as model/indexer_grad.h (the Eigen reference, checked against finite
// differences), written over model/backend.h so the trainer runs it on the CPU or the GPU. All
// tensors are f32 backend tensors.
#pragma once

#include "kernels/rope.h"
#include "model/backend.h"
#include "model/config.h"

namespace indexcache {

// One layer's indexer parameters (or their gradients), f32 backend tensors.
struct StudentParams {
  Tensor wq_b;           // [HI * D, q_lora_rank]
  Tensor wk;             // [D, hidden]
  Tensor k_norm_weight;  // [D]
  Tensor k_norm_bias;    // [D]
  Tensor weights_proj;   // [HI, hidden]
};

struct StudentActivations {
  Tensor q;      // [T, HI * D] rope applied
  Tensor k;      // [T, D]      rope applied
  Tensor w;      // [T, HI]     n_heads^-0.5 folded in
  Tensor k_hat;  // [T, D]      LayerNorm's normalised input
  Tensor k_inv;  // [T]         LayerNorm's 1 / sqrt(var + eps)
};

// x: [T, hidden] input_layernorm output; q_lat: [T, q_lora_rank] q_a_layernorm output (f32).
StudentActivations StudentForward(Backend& be, const ModelConfig& c, const StudentParams& p, const Tensor& x,
                                  const Tensor& q_lat, const RopeTable& rope);

// Adds the weight gradients into `grads`. dq, dk and dw (the loss gradients after rope) are
// consumed: they are rotated back in place.
void StudentBackward(Backend& be, const ModelConfig& c, const StudentParams& p, const Tensor& x, const Tensor& q_lat,
                     const RopeTable& rope, const StudentActivations& act, Tensor* dq, Tensor* dk, const Tensor& dw,
                     StudentParams* grads);

}  // namespace indexcache
