#include "trainer/distill.h"

#include <cstring>

#include "kernels/distill_loss.h"
#include "kernels/rope.h"

namespace indexcache {

namespace {

Matrix ToMatrix(const Tensor& t, int64_t cols) {
  return Eigen::Map<const Matrix>(t.data<float>(), t.numel() / cols, cols);
}

}  // namespace

Status DistillSequence(const DsaModel& model, const IndexPattern& pattern, DistillMode mode,
                       const IndexerSet& indexers, const std::vector<int32_t>& tokens, double scale,
                       IndexerGradSet* grads, DistillStats* stats) {
  const ModelConfig& c = model.config();
  ForwardOptions opts;
  opts.pattern = &pattern;
  opts.compute_logits = false;
  opts.trace.attention = true;
  opts.trace.indexer_inputs = true;
  opts.trace.topk = true;
  ASSIGN_OR_RETURN(ForwardResult r, model.Forward(tokens, opts));
  const int64_t T = static_cast<int64_t>(tokens.size());
  const RopeTable rope = BuildRopeTable(c.rope, c.qk_rope_head_dim, 0, T);
  for (int f = 0; f < pattern.num_layers(); ++f) {
    if (!pattern.is_full(f)) continue;
    auto it = indexers.find(f);
    if (it == indexers.end()) return Internal("no trainable indexer for Full layer " + std::to_string(f));
    const IndexerWeights& W = it->second;
    const LayerTrace& tf = r.layers[f];
    const Matrix x = ToMatrix(tf.indexer_x, c.hidden_size);
    const Matrix q_lat = ToMatrix(tf.q_latent, c.q_lora_rank);
    const IndexerActivations act = IndexerForward(c, W, x, q_lat, rope);

    DistillLossParams p;
    p.q = act.q.data();
    p.k = act.k.data();
    p.w = act.w.data();
    p.Tq = T;
    p.L = T;
    p.HI = c.index_n_heads;
    p.D = c.index_head_dim;
    p.index_scale = static_cast<float>(1.0 / std::sqrt(double(c.index_head_dim)));
    for (int j : pattern.served_by(f)) {
      p.attn_q.push_back(r.layers[j].attn_q.data<float>());
      p.attn_kv.push_back(r.layers[j].attn_kv.data<float>());
    }
    p.HA = c.num_heads;
    p.DA = c.latent_dim();
    p.attn_scale = tf.attn_scale;
    p.sparse = mode == DistillMode::kSparse;
    p.topk = tf.topk.data<int32_t>();
    p.K = tf.topk.size(1);
    Matrix dq = Matrix::Zero(T, c.index_n_heads * c.index_head_dim);
    Matrix dk = Matrix::Zero(T, c.index_head_dim);
    Matrix dw = Matrix::Zero(T, c.index_n_heads);
    double loss = 0.0;
    p.loss = &loss;
    p.grad_q = dq.data();
    p.grad_k = dk.data();
    p.grad_w = dw.data();
    DistillLossCpu(p);
    stats->loss_sum += loss;
    stats->queries += T;
    const float s = static_cast<float>(scale);
    dq *= s;
    dk *= s;
    dw *= s;
    auto g = grads->find(f);
    if (g == grads->end()) g = grads->emplace(f, IndexerGrads::ZerosLike(W)).first;
    IndexerBackward(c, W, x, q_lat, rope, act, dq, dk, dw, &g->second);
  }
  return Status::Ok();
}

}  // namespace indexcache
