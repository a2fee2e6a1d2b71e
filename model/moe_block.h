// The feed-forward blocks of the DSA forward, written once over model/backend.h: the dense MLP
// and the routed MoE (DeepSeek-V3 family: sigmoid group-limited routing, routed experts, optional
// shared expert).
#pragma once

#include "core/tensor.h"
#include "model/backend.h"
#include "model/backend_weights.h"
#include "model/config.h"

namespace indexcache {

// y += MLP(x) = down(silu(gate x) * up x), or y = when !accumulate.
void Mlp(Backend& be, const BackendMlp& w, const Tensor& x, Tensor* y, bool accumulate);

// y += MoE(x) for x [T, hidden] in the activation dtype. Everything stays on the backend's device
// but the E + 1 expert offsets (one small copy per layer, see Backend::MoeGroupByExpert): route,
// group the T * k assignments by expert, gather their rows into one permuted buffer, run every
// expert's MLP over its contiguous rows, combine back per token in a fixed order, then add the
// shared expert.
void Moe(Backend& be, const ModelConfig& c, const BackendMoe& w, const Tensor& x, Tensor* y);

}  // namespace indexcache
