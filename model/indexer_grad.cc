#include "model/indexer_grad.h"

#include <cmath>

namespace indexcache {

namespace {

constexpr float kIndexerNormEps = 1e-6f;  // transformers' k_norm = LayerNorm(eps=1e-6)

void ApplyRope(const ModelConfig& c, const RopeTable& table, Matrix* x, int64_t heads) {
  const int64_t D = c.index_head_dim;
  if (c.indexer_rope_interleave) {
    ApplyRopeInterleavedCpu(table, x->data(), x->rows(), heads, heads * D, D);
  } else {
    ApplyRopeHalfSplitCpu(table, x->data(), x->rows(), heads, heads * D, D);
  }
}

// Rope is a rotation per pair, so its transpose is the rotation by the opposite angle.
RopeTable Transposed(const RopeTable& t) {
  RopeTable inv = t;
  for (float& s : inv.sin) s = -s;
  return inv;
}

}  // namespace

IndexerGrads IndexerGrads::ZerosLike(const IndexerWeights& w) {
  IndexerGrads g;
  g.wq_b = Matrix::Zero(w.wq_b.rows(), w.wq_b.cols());
  g.wk = Matrix::Zero(w.wk.rows(), w.wk.cols());
  g.weights_proj = Matrix::Zero(w.weights_proj.rows(), w.weights_proj.cols());
  g.k_norm_weight = Vector::Zero(w.k_norm_weight.size());
  g.k_norm_bias = Vector::Zero(w.k_norm_bias.size());
  return g;
}

void IndexerGrads::Add(const IndexerGrads& o) {
  wq_b += o.wq_b;
  wk += o.wk;
  weights_proj += o.weights_proj;
  k_norm_weight += o.k_norm_weight;
  k_norm_bias += o.k_norm_bias;
}

IndexerActivations IndexerForward(const ModelConfig& c, const IndexerWeights& w, const Matrix& x, const Matrix& q_lat,
                                  const RopeTable& rope) {
  const int64_t T = x.rows(), HI = c.index_n_heads, D = c.index_head_dim;
  IndexerActivations a;
  a.q = q_lat * w.wq_b.transpose();
  ApplyRope(c, rope, &a.q, HI);
  const Matrix k_lin = x * w.wk.transpose();
  a.k_hat.resize(T, D);
  a.k_inv.resize(T);
  a.k.resize(T, D);
  for (int64_t t = 0; t < T; ++t) {
    const double mean = k_lin.row(t).cast<double>().mean();
    const double var = (k_lin.row(t).cast<double>().array() - mean).square().mean();
    const double inv = 1.0 / std::sqrt(var + kIndexerNormEps);
    a.k_inv(t) = static_cast<float>(inv);
    for (int64_t d = 0; d < D; ++d) {
      a.k_hat(t, d) = static_cast<float>((k_lin(t, d) - mean) * inv);
      a.k(t, d) = a.k_hat(t, d) * w.k_norm_weight(d) + w.k_norm_bias(d);
    }
  }
  ApplyRope(c, rope, &a.k, 1);
  a.w = (x * w.weights_proj.transpose()) * static_cast<float>(1.0 / std::sqrt(double(HI)));
  return a;
}

void IndexerBackward(const ModelConfig& c, const IndexerWeights& w, const Matrix& x, const Matrix& q_lat,
                     const RopeTable& rope, const IndexerActivations& act, const Matrix& dq, const Matrix& dk,
                     const Matrix& dw, IndexerGrads* g) {
  const int64_t T = x.rows(), HI = c.index_n_heads, D = c.index_head_dim;
  const RopeTable back = Transposed(rope);
  // w = (x P^T) s  =>  dP = s dw^T x
  g->weights_proj.noalias() += (dw * static_cast<float>(1.0 / std::sqrt(double(HI)))).transpose() * x;
  // q = rope(q_lat Wq^T)  =>  dWq = rope^T(dq)^T q_lat
  Matrix dq_pre = dq;
  ApplyRope(c, back, &dq_pre, HI);
  g->wq_b.noalias() += dq_pre.transpose() * q_lat;
  // k = rope(LN(x Wk^T))  =>  through rope^T, the affine, then the normalisation.
  Matrix dk_pre = dk;
  ApplyRope(c, back, &dk_pre, 1);
  Matrix dk_lin(T, D);
  for (int64_t t = 0; t < T; ++t) {
    double mean_dxhat = 0.0, mean_dxhat_xhat = 0.0;
    for (int64_t d = 0; d < D; ++d) {
      g->k_norm_weight(d) += dk_pre(t, d) * act.k_hat(t, d);
      g->k_norm_bias(d) += dk_pre(t, d);
      const double dxhat = double(dk_pre(t, d)) * w.k_norm_weight(d);
      mean_dxhat += dxhat / D;
      mean_dxhat_xhat += dxhat * act.k_hat(t, d) / D;
    }
    for (int64_t d = 0; d < D; ++d) {
      const double dxhat = double(dk_pre(t, d)) * w.k_norm_weight(d);
      dk_lin(t, d) = static_cast<float>(act.k_inv(t) * (dxhat - mean_dxhat - act.k_hat(t, d) * mean_dxhat_xhat));
    }
  }
  g->wk.noalias() += dk_lin.transpose() * x;
}

}  // namespace indexcache
