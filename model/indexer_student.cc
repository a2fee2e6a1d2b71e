#include "model/indexer_student.h"

#include <cmath>

namespace indexcache {

namespace {
constexpr float kIndexerNormEps = 1e-6f;  // transformers' k_norm = LayerNorm(eps=1e-6)

// Rope is a rotation per pair; its transpose rotates by the opposite angle.
RopeTable Transposed(const RopeTable& t) {
  RopeTable inv = t;
  for (float& s : inv.sin) s = -s;
  return inv;
}
}  // namespace

StudentActivations StudentForward(Backend& be, const ModelConfig& c, const StudentParams& p, const Tensor& x,
                                  const Tensor& q_lat, const RopeTable& rope) {
  const int64_t T = x.size(0), HI = c.index_n_heads, D = c.index_head_dim;
  StudentActivations a;
  a.q = be.Alloc(DType::kF32, {T, HI * D});
  be.Gemm(q_lat, false, p.wq_b, true, 1.0f, 0.0f, &a.q);
  be.Rope(rope, c.indexer_rope_interleave, HI, D, 0, &a.q);
  Tensor k_lin = be.Alloc(DType::kF32, {T, D});
  be.Gemm(x, false, p.wk, true, 1.0f, 0.0f, &k_lin);
  a.k = be.Alloc(DType::kF32, {T, D});
  a.k_hat = be.Alloc(DType::kF32, {T, D});
  a.k_inv = be.Alloc(DType::kF32, {T});
  be.LayerNormTrain(k_lin, p.k_norm_weight, p.k_norm_bias, kIndexerNormEps, &a.k, &a.k_hat, &a.k_inv);
  be.Rope(rope, c.indexer_rope_interleave, 1, D, 0, &a.k);
  a.w = be.Alloc(DType::kF32, {T, HI});
  be.Gemm(x, false, p.weights_proj, true, static_cast<float>(1.0 / std::sqrt(double(HI))), 0.0f, &a.w);
  return a;
}

void StudentBackward(Backend& be, const ModelConfig& c, const StudentParams& p, const Tensor& x, const Tensor& q_lat,
                     const RopeTable& rope, const StudentActivations& act, Tensor* dq, Tensor* dk, const Tensor& dw,
                     StudentParams* g) {
  const int64_t T = x.size(0), HI = c.index_n_heads, D = c.index_head_dim;
  const RopeTable back = Transposed(rope);
  // w = s x P^T  =>  dP += s dw^T x
  be.Gemm(dw, true, x, false, static_cast<float>(1.0 / std::sqrt(double(HI))), 1.0f, &g->weights_proj);
  // q = rope(q_lat Wq^T)  =>  dWq += rope^T(dq)^T q_lat
  be.Rope(back, c.indexer_rope_interleave, HI, D, 0, dq);
  be.Gemm(*dq, true, q_lat, false, 1.0f, 1.0f, &g->wq_b);
  // k = rope(LN(x Wk^T))  =>  through rope^T and the LayerNorm, then dWk += dk_lin^T x
  be.Rope(back, c.indexer_rope_interleave, 1, D, 0, dk);
  Tensor dk_lin = be.Alloc(DType::kF32, {T, D});
  be.LayerNormBackward(*dk, act.k_hat, act.k_inv, p.k_norm_weight, &dk_lin, &g->k_norm_weight, &g->k_norm_bias);
  be.Gemm(dk_lin, true, x, false, 1.0f, 1.0f, &g->wk);
}

}  // namespace indexcache
