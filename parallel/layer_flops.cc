#include "parallel/layer_flops.h"

#include <algorithm>

namespace indexcache {

double CausalPairs(int64_t tokens) {
  const double t = static_cast<double>(tokens);
  return t * (t + 1) / 2;
}

double SparsePairs(int64_t tokens, int64_t topk) {
  const int64_t dense_rows = std::min(tokens, topk);  // rows t < k read t + 1 keys
  return CausalPairs(dense_rows) + static_cast<double>(tokens - dense_rows) * static_cast<double>(topk);
}

double IndexerProjectionFlops(const ModelConfig& c, int64_t tokens) {
  const double per_token = static_cast<double>(c.q_lora_rank) * c.index_n_heads * c.index_head_dim +
                           static_cast<double>(c.hidden_size) * c.index_head_dim +
                           static_cast<double>(c.hidden_size) * c.index_n_heads;
  return 2.0 * per_token * static_cast<double>(tokens);
}

double TeacherQueryFlops(const ModelConfig& c, int64_t tokens) {
  const double per_token = static_cast<double>(c.q_lora_rank) * c.num_heads * c.qk_head_dim() +
                           static_cast<double>(c.num_heads) * c.qk_nope_head_dim * c.kv_lora_rank;
  return 2.0 * per_token * static_cast<double>(tokens);
}

LayerFlops ForwardFlops(const ModelConfig& c, int layer, bool full, int64_t tokens) {
  const double h = static_cast<double>(c.hidden_size), heads = static_cast<double>(c.num_heads);
  const double attention_gemm = h * c.q_lora_rank + static_cast<double>(c.q_lora_rank) * heads * c.qk_head_dim() +
                                h * c.latent_dim() +
                                heads * c.qk_nope_head_dim * c.kv_lora_rank +  // q_nope into the latent space
                                heads * c.kv_lora_rank * c.v_head_dim +        // values out of the latent space
                                heads * c.v_head_dim * h;                      // o_proj
  double mlp = 0, routed = 0;
  if (c.layer_is_moe[layer]) {
    mlp = 3.0 * h * c.moe_intermediate_size * c.n_shared_experts + h * c.n_routed_experts;
    routed = 3.0 * h * c.moe_intermediate_size * c.num_experts_per_tok;
  } else {
    mlp = 3.0 * h * c.intermediate_size;
  }
  LayerFlops f;
  const double t = static_cast<double>(tokens);
  f.gemm = 2.0 * (attention_gemm + mlp) * t;
  f.routed_experts = 2.0 * routed * t;
  f.sparse_attention = 2.0 * heads * (c.latent_dim() + c.kv_lora_rank) * SparsePairs(tokens, c.index_topk);
  if (full) {
    f.indexer = IndexerProjectionFlops(c, tokens) +
                2.0 * c.index_n_heads * c.index_head_dim * CausalPairs(tokens);
  }
  return f;
}

double DistillLossFlops(const ModelConfig& c, int64_t tokens, int served, bool dense) {
  const double pairs = dense ? CausalPairs(tokens) : SparsePairs(tokens, c.index_topk);
  const double per_pair = served * 2.0 * 2.0 * c.num_heads * c.latent_dim() +
                          4.0 * 2.0 * c.index_n_heads * c.index_head_dim;
  return pairs * per_pair;
}

double LmHeadFlops(const ModelConfig& c, int64_t tokens) {
  return 2.0 * static_cast<double>(c.hidden_size) * c.vocab_size * static_cast<double>(tokens);
}

}  // namespace indexcache
