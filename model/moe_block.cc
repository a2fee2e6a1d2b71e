#include "model/moe_block.h"

namespace indexcache {

void Mlp(Backend& be, const BackendMlp& w, const Tensor& x, Tensor* y, bool accumulate) {
  const int64_t T = x.size(0), I = w.gate.size(0);
  Tensor gate = be.Alloc(be.activation_dtype(), {T, I});
  Tensor up = be.Alloc(be.activation_dtype(), {T, I});
  be.Linear(x, w.gate, &gate);
  be.Linear(x, w.up, &up);
  be.SiluMul(gate, up, &gate);
  be.Linear(gate, w.down, y, accumulate);
}

void Moe(Backend& be, const ModelConfig& c, const BackendMoe& w, const Tensor& x, Tensor* y) {
  const int64_t T = x.size(0), H = x.size(1), K = c.num_experts_per_tok, E = c.n_routed_experts;
  if (T > 0) {
    // The router runs in fp32, as transformers does: near-equal scores must rank the same way.
    const Tensor x32 = be.Convert(x, DType::kF32);
    Tensor logits = be.Alloc(DType::kF32, {T, E});
    be.Linear(x32, w.router, &logits);
    MoeRouteSpec spec;
    spec.n_group = c.n_group;
    spec.topk_group = c.topk_group;
    spec.topk = K;
    spec.norm_topk_prob = c.norm_topk_prob;
    spec.routed_scaling_factor = static_cast<float>(c.routed_scaling_factor);
    Tensor experts = be.Alloc(DType::kI32, {T, K});
    Tensor weights = be.Alloc(DType::kF32, {T, K});
    be.MoeRoute(logits, w.score_bias, spec, &experts, &weights);
    const MoeGrouping grouping = be.MoeGroupByExpert(experts, E);
    Tensor permuted = be.Alloc(be.activation_dtype(), {T * K, H});
    be.MoeGather(x, grouping.order, K, &permuted);
    Tensor out = be.Alloc(be.activation_dtype(), {T * K, H});
    be.ExpertMlps(w.experts, permuted, grouping.offsets, &out);
    be.MoeCombine(out, grouping.inverse, weights, y);
  }
  if (w.has_shared) Mlp(be, w.shared, x, y, /*accumulate=*/true);
}

}  // namespace indexcache
