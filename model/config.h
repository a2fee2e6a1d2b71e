// ModelConfig: a DSA model's config.json (`deepseek_v32` or `glm_moe_dsa`), validated and resolved.
//
// Accepts both the released checkpoints' form (`rope_theta` + `rope_scaling` at top level) and
// transformers >= 5's `rope_parameters`; `mlp_layer_types` or `first_k_dense_replace`; and an FP8
// `quantization_config`. Every error names the file and the field.
#pragma once

#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "core/status.h"
#include "kernels/rope_config.h"  // RopeType, RopeConfig
#include "model/pattern.h"

namespace indexcache {

enum class ModelType { kDeepseekV32, kGlmMoeDsa };
const char* ModelTypeName(ModelType type);

struct QuantConfig {
  bool fp8 = false;              // weights stored as e4m3 with `weight_scale_inv` block scales
  int64_t block_rows = 128, block_cols = 128;
};

struct ModelConfig {
  std::string source;  // path of config.json, for messages
  ModelType model_type = ModelType::kDeepseekV32;
  int64_t vocab_size = 0, hidden_size = 0, num_layers = 0;
  int64_t intermediate_size = 0, moe_intermediate_size = 0;
  // MLA
  int64_t num_heads = 0, q_lora_rank = 0, kv_lora_rank = 0;
  int64_t qk_nope_head_dim = 0, qk_rope_head_dim = 0, v_head_dim = 0;
  // MoE
  std::vector<bool> layer_is_moe;  // per layer: MoE block (true) or dense MLP
  int64_t n_routed_experts = 0, n_shared_experts = 0, num_experts_per_tok = 0;
  int64_t n_group = 1, topk_group = 1;
  bool norm_topk_prob = true;
  double routed_scaling_factor = 1.0;
  // Indexer
  int64_t index_topk = 0, index_n_heads = 0, index_head_dim = 0;
  bool indexer_rope_interleave = false;  // glm_moe_dsa: interleaved; deepseek_v32: half-split
  // Misc
  double rms_norm_eps = 1e-6;
  int64_t max_position_embeddings = 0;
  bool tie_word_embeddings = false;
  RopeConfig rope;
  QuantConfig quant;
  IndexPattern pattern;  // from the config's pattern keys (all Full if none)
  // `indexer_types` is given: Shared layers ship no indexer weights (GLM-5.2 checkpoints).
  bool shared_layers_lack_indexer = false;

  int64_t qk_head_dim() const { return qk_nope_head_dim + qk_rope_head_dim; }
  // Absorbed (MQA) attention sizes: one shared latent per key.
  int64_t latent_dim() const { return kv_lora_rank + qk_rope_head_dim; }
  // Main attention softmax scale: qk_head_dim^-0.5, times yarn's mscale^2 when it applies.
  double softmax_scale() const;
};

StatusOr<ModelConfig> ParseModelConfig(const nlohmann::json& config, const std::string& source);
// Reads `<dir>/config.json`.
StatusOr<ModelConfig> LoadModelConfig(const std::string& model_dir);

// The activation budget of one forward chunk (DsaModel::Forward runs the per-token work in row
// chunks over the whole sequence's latents, so that 128K fits), and the rows per chunk it allows
// for `c` with activations of `activation_bytes` per element (the planner uses the same rule).
inline constexpr int64_t kForwardChunkBytes = int64_t{8} << 30;
int64_t ForwardChunkRows(const ModelConfig& c, int64_t activation_bytes);

}  // namespace indexcache
