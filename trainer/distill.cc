#include "trainer/distill.h"

#include <cmath>

#include "kernels/rope.h"

namespace indexcache {

Status DistillSequence(const DsaModel& model, const IndexPattern& pattern, DistillMode mode, const StudentSet& students,
                       const std::vector<int32_t>& tokens, double scale, StudentSet* grads, DistillStats* stats,
                       DistillTargets targets, const StageContext* stage) {
  const ModelConfig& c = model.config();
  Backend& be = model.backend();
  ForwardOptions opts;
  opts.pattern = &pattern;
  opts.compute_logits = false;
  opts.trace.attention = true;
  opts.trace.indexer_inputs = true;
  opts.trace.topk = true;
  opts.trace_on_device = true;
  ASSIGN_OR_RETURN(StageForward stage_forward, ForwardStage(model, stage ? *stage : StageContext{}, tokens, opts));
  const ForwardResult& r = stage_forward.result;
  const LayerRange held = stage ? stage->layers(pattern.num_layers()) : LayerRange{0, pattern.num_layers()};
  const int64_t T = static_cast<int64_t>(tokens.size()), HI = c.index_n_heads, D = c.index_head_dim;
  const RopeTable rope = BuildRopeTable(c.rope, c.qk_rope_head_dim, 0, T);
  for (int f = held.begin; f < held.end; ++f) {
    if (!pattern.is_full(f)) continue;
    auto it = students.find(f);
    if (it == students.end()) return Internal("no trainable indexer for Full layer " + std::to_string(f));
    const StudentParams& W = it->second;
    const LayerTrace& tf = r.layers[f];
    const Tensor x = be.Convert(tf.indexer_x, DType::kF32);
    const Tensor q_lat = be.Convert(tf.q_latent, DType::kF32);
    const StudentActivations act = StudentForward(be, c, W, x, q_lat, rope);

    Tensor dq = be.Alloc(DType::kF32, {T, HI * D});
    Tensor dk = be.Alloc(DType::kF32, {T, D});
    Tensor dw = be.Alloc(DType::kF32, {T, HI});
    DistillLossArgs args;
    args.q = act.q;
    args.k = act.k;
    args.w = act.w;
    const std::vector<int> teachers = targets == DistillTargets::kOwn ? std::vector<int>{f} : pattern.served_by(f);
    for (int j : teachers) {
      if (j >= held.end) {
        return InvalidArgument("Full layer " + std::to_string(f) + " serves layer " + std::to_string(j) +
                               ", which is on another pipeline stage");
      }
      args.attn_q.push_back(r.layers[j].attn_q);
      args.attn_kv.push_back(r.layers[j].attn_kv);
    }
    args.index_scale = static_cast<float>(1.0 / std::sqrt(double(D)));
    args.attn_scale = tf.attn_scale;
    args.sparse = mode == DistillMode::kSparse;
    args.topk = tf.topk;
    args.grad_q = &dq;
    args.grad_k = &dk;
    args.grad_w = &dw;
    stats->loss_sum += be.DistillLoss(args);
    stats->queries += T;
    if (!grads) continue;
    be.Scale(&dq, static_cast<float>(scale));
    be.Scale(&dk, static_cast<float>(scale));
    be.Scale(&dw, static_cast<float>(scale));
    auto g = grads->find(f);
    if (g == grads->end()) return Internal("no gradient buffers for Full layer " + std::to_string(f));
    StudentBackward(be, c, W, x, q_lat, rope, act, &dq, &dk, dw, &g->second);
  }
  return Status::Ok();
}

}  // namespace indexcache
