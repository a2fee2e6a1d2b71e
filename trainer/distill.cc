#include "trainer/distill.h"

#include <algorithm>
#include <cmath>

#include "kernels/rope.h"

namespace indexcache {

int64_t DistillChunkRows(const ModelConfig& c, int64_t served_layers, int64_t activation_bytes) {
  // Per query row of a chunk: each served layer's rebuilt queries (and their bf16 copy on CUDA).
  const int64_t per_row = std::max<int64_t>(1, served_layers) * c.num_heads * c.latent_dim() *
                          std::max<int64_t>(1, activation_bytes) * 2;
  return std::max<int64_t>(1, kDistillTeacherChunkBytes / per_row);
}

Status DistillSequence(const DsaModel& model, const IndexPattern& pattern, DistillMode mode, const StudentSet& students,
                       const std::vector<int32_t>& tokens, double scale, StudentSet* grads, DistillStats* stats,
                       DistillTargets targets, const StageContext* stage, int64_t chunk_rows) {
  const ModelConfig& c = model.config();
  Backend& be = model.backend();
  const LayerRange held = stage ? stage->layers(pattern.num_layers()) : LayerRange{0, pattern.num_layers()};
  // The teachers of every Full layer: checked before the forward runs.
  std::map<int, std::vector<int>> teachers_of;
  for (int f = held.begin; f < held.end; ++f) {
    if (!pattern.is_full(f)) continue;
    if (students.find(f) == students.end()) return Internal("no trainable indexer for Full layer " + std::to_string(f));
    std::vector<int> teachers = targets == DistillTargets::kOwn ? std::vector<int>{f} : pattern.served_by(f);
    for (int j : teachers) {
      if (j >= held.end) {
        return InvalidArgument("Full layer " + std::to_string(f) + " serves layer " + std::to_string(j) +
                               ", which is on another pipeline stage");
      }
    }
    teachers_of[f] = std::move(teachers);
  }

  // The frozen forward keeps, per layer, only what the loss is rebuilt from: the Full layers'
  // indexer inputs and top-k, and every layer's q_latent and latents. The teachers' absorbed
  // queries ([T, heads, latent_dim] per layer: 19 GB at 128K for V3.2) are recomputed below one
  // query chunk at a time.
  ForwardOptions opts;
  opts.pattern = &pattern;
  opts.compute_logits = false;
  opts.trace.attention_inputs = true;
  opts.trace.indexer_inputs = true;
  opts.trace.topk = true;
  opts.trace_on_device = true;
  opts.chunk_rows = chunk_rows;
  ASSIGN_OR_RETURN(StageForward stage_forward, ForwardStage(model, stage ? *stage : StageContext{}, tokens, opts));
  const ForwardResult& r = stage_forward.result;
  const int64_t T = static_cast<int64_t>(tokens.size()), HI = c.index_n_heads, D = c.index_head_dim;
  const int64_t NH = c.num_heads, DA = c.latent_dim();
  const RopeTable rope = BuildRopeTable(c.rope, c.qk_rope_head_dim, 0, T);
  for (const auto& [f, teachers] : teachers_of) {
    const StudentParams& W = students.at(f);
    const LayerTrace& tf = r.layers[f];
    const Tensor x = be.Convert(tf.indexer_x, DType::kF32);
    const Tensor q_lat = be.Convert(tf.q_latent, DType::kF32);
    const StudentActivations act = StudentForward(be, c, W, x, q_lat, rope);

    Tensor dq = be.Alloc(DType::kF32, {T, HI * D});
    Tensor dk = be.Alloc(DType::kF32, {T, D});
    Tensor dw = be.Alloc(DType::kF32, {T, HI});
    const int64_t chunk = chunk_rows > 0 ? chunk_rows
                                         : DistillChunkRows(c, static_cast<int64_t>(teachers.size()),
                                                            DTypeSize(be.activation_dtype()));
    for (int64_t t0 = 0; t0 < T; t0 += chunk) {
      const int64_t t1 = std::min(T, t0 + chunk), rows = t1 - t0;
      DistillLossArgs args;
      args.q = act.q.Slice0(t0, t1);
      args.k = act.k;
      args.w = act.w.Slice0(t0, t1);
      args.query_offset = t0;
      for (int j : teachers) {
        const LayerTrace& tj = r.layers[j];
        Tensor q_abs = be.Alloc(be.activation_dtype(), {rows, NH, DA});
        RETURN_IF_ERROR(model.AbsorbedQueries(j, tj.q_latent.Slice0(t0, t1), t0, &q_abs));
        args.attn_q.push_back(q_abs);
        args.attn_kv.push_back(tj.attn_kv);
      }
      args.index_scale = static_cast<float>(1.0 / std::sqrt(double(D)));
      args.attn_scale = r.layers[teachers.front()].attn_scale;
      args.sparse = mode == DistillMode::kSparse;
      args.topk = tf.topk.Slice0(t0, t1);
      Tensor dq_rows = dq.Slice0(t0, t1);
      Tensor dw_rows = dw.Slice0(t0, t1);
      args.grad_q = &dq_rows;
      args.grad_k = &dk;
      args.grad_w = &dw_rows;
      stats->loss_sum += be.DistillLoss(args);
    }
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
