// Forward FLOPs of one DSA decoder layer over one causal sequence of T tokens (multiply-add = 2
// FLOPs), split into the parts that run at different measured speeds: GEMMs (MLA projections in
// the absorbed form, dense MLP or the active experts), the sparse MLA over min(t+1, k) keys per
// query, and the lightning indexer (Full layers only: its projections plus scores over all
// T(T+1)/2 causal pairs). Also the distillation trainer's extra work. Pure formulas on the config.
#pragma once

#include <cstdint>

#include "model/config.h"

namespace indexcache {

struct LayerFlops {
  double gemm = 0;              // q/kv/o projections (absorbed MLA), dense MLP or shared experts, router
  double routed_experts = 0;    // a MoE layer's routed experts (k per token): their own measured speed
  double sparse_attention = 0;  // 2 x heads x (latent + kv_lora) per (query, selected key)
  double indexer = 0;           // 0 for a Shared layer
  double total() const { return gemm + routed_experts + sparse_attention + indexer; }
};

// sum over t < T of (t + 1): the causal pairs.
double CausalPairs(int64_t tokens);
// sum over t < T of min(t + 1, k): the keys sparse attention reads.
double SparsePairs(int64_t tokens, int64_t topk);

LayerFlops ForwardFlops(const ModelConfig& config, int layer, bool full, int64_t tokens);
// The indexer's projection FLOPs alone (wq_b, wk, weights_proj) over T tokens.
double IndexerProjectionFlops(const ModelConfig& config, int64_t tokens);
// Recomputing a served layer's absorbed queries from its kept q_latent (q_b and the absorption).
double TeacherQueryFlops(const ModelConfig& config, int64_t tokens);
// The fused distillation loss (forward + backward) of one Full layer serving `served` layers:
// pairs x (served x 2 sweeps x 2 x heads x latent + 4 x 2 x index_heads x index_head_dim), pairs
// all causal ones (dense) or the top-k ones (sparse); the formula of docs/benchmarks.md.
double DistillLossFlops(const ModelConfig& config, int64_t tokens, int served, bool dense);
// Final projection to the vocabulary.
double LmHeadFlops(const ModelConfig& config, int64_t tokens);

}  // namespace indexcache
