#include "parallel/weight_inventory.h"

#include <limits>

namespace indexcache {

namespace {

int64_t CeilDiv(int64_t a, int64_t b) { return (a + b - 1) / b; }

// Dimensions above this are not a real model; refusing them keeps every product below 2^63.
constexpr int64_t kMaxDim = int64_t{1} << 24;
constexpr int64_t kMaxLayers = 4096;
constexpr int64_t kMaxExperts = 1 << 16;

class LayerBuilder {
 public:
  LayerBuilder(const std::string& prefix, WeightGroup* group) : prefix_(prefix), group_(group) {}
  void Linear(const std::string& name, int64_t out, int64_t in, bool fp8, int64_t copies = 1) {
    group_->tensors.push_back({prefix_ + name + ".weight", out, in, copies, fp8, false});
  }
  void Vector(const std::string& name, int64_t n, bool fp32 = false) {
    group_->tensors.push_back({prefix_ + name, n, 1, 1, false, fp32});
  }

 private:
  std::string prefix_;
  WeightGroup* group_;
};

void AddMlp(LayerBuilder& b, const std::string& prefix, int64_t hidden, int64_t width, int64_t copies = 1) {
  b.Linear(prefix + ".gate_proj", width, hidden, true, copies);
  b.Linear(prefix + ".up_proj", width, hidden, true, copies);
  b.Linear(prefix + ".down_proj", hidden, width, true, copies);
}

WeightGroup LayerWeights(const ModelConfig& c, int layer) {
  WeightGroup g;
  g.layer = layer;
  LayerBuilder b("model.layers." + std::to_string(layer) + ".", &g);
  const int64_t h = c.hidden_size;
  b.Vector("input_layernorm.weight", h);
  b.Vector("post_attention_layernorm.weight", h);
  b.Linear("self_attn.q_a_proj", c.q_lora_rank, h, true);
  b.Vector("self_attn.q_a_layernorm.weight", c.q_lora_rank);
  b.Linear("self_attn.q_b_proj", c.num_heads * c.qk_head_dim(), c.q_lora_rank, true);
  b.Linear("self_attn.kv_a_proj_with_mqa", c.latent_dim(), h, true);
  b.Vector("self_attn.kv_a_layernorm.weight", c.kv_lora_rank);
  b.Linear("self_attn.kv_b_proj", c.num_heads * (c.qk_nope_head_dim + c.v_head_dim), c.kv_lora_rank, true);
  b.Linear("self_attn.o_proj", h, c.num_heads * c.v_head_dim, true);
  const bool has_indexer = c.pattern.is_full(layer) || !c.shared_layers_lack_indexer;
  if (has_indexer) {
    b.Linear("self_attn.indexer.wq_b", c.index_n_heads * c.index_head_dim, c.q_lora_rank, true);
    b.Linear("self_attn.indexer.wk", c.index_head_dim, h, true);
    b.Vector("self_attn.indexer.k_norm.weight", c.index_head_dim);
    b.Vector("self_attn.indexer.k_norm.bias", c.index_head_dim);
    b.Linear("self_attn.indexer.weights_proj", c.index_n_heads, h, false);
  }
  if (c.layer_is_moe[layer]) {
    b.Linear("mlp.gate", c.n_routed_experts, h, false);
    b.Vector("mlp.gate.e_score_correction_bias", c.n_routed_experts, true);
    AddMlp(b, "mlp.experts.0", h, c.moe_intermediate_size, c.n_routed_experts);
    if (c.n_shared_experts > 0) AddMlp(b, "mlp.shared_experts", h, c.moe_intermediate_size * c.n_shared_experts);
  } else {
    AddMlp(b, "mlp", h, c.intermediate_size);
  }
  return g;
}

Status CheckSizes(const ModelConfig& c) {
  const std::pair<const char*, int64_t> dims[] = {
      {"vocab_size", c.vocab_size},           {"hidden_size", c.hidden_size},
      {"intermediate_size", c.intermediate_size}, {"moe_intermediate_size", c.moe_intermediate_size},
      {"num_attention_heads", c.num_heads},   {"q_lora_rank", c.q_lora_rank},
      {"kv_lora_rank", c.kv_lora_rank},       {"qk_nope_head_dim", c.qk_nope_head_dim},
      {"qk_rope_head_dim", c.qk_rope_head_dim}, {"v_head_dim", c.v_head_dim},
      {"index_n_heads", c.index_n_heads},     {"index_head_dim", c.index_head_dim},
      {"index_topk", c.index_topk}};
  for (const auto& [field, value] : dims) {
    if (value > kMaxDim) {
      return InvalidArgument(c.source + ": field '" + field + "' = " + std::to_string(value) + " exceeds " +
                             std::to_string(kMaxDim));
    }
  }
  if (c.num_layers > kMaxLayers) {
    return InvalidArgument(c.source + ": field 'num_hidden_layers' = " + std::to_string(c.num_layers) + " exceeds " +
                           std::to_string(kMaxLayers));
  }
  if (c.n_routed_experts > kMaxExperts || c.n_shared_experts > kMaxExperts) {
    return InvalidArgument(c.source + ": field 'n_routed_experts' or 'n_shared_experts' exceeds " +
                           std::to_string(kMaxExperts));
  }
  return Status::Ok();
}

}  // namespace

StatusOr<int64_t> CheckedMul(int64_t a, int64_t b, const std::string& what) {
  int64_t out;
  if (a < 0 || b < 0 || __builtin_mul_overflow(a, b, &out)) return InvalidArgument(what + ": size overflows 64 bits");
  return out;
}

int64_t WeightTensor::device_bytes(const QuantConfig& quant) const {
  if (fp8 && quant.fp8) {
    const int64_t scales = CeilDiv(rows, quant.block_rows) * CeilDiv(cols, quant.block_cols);
    return copies * (rows * cols + scales * 4);
  }
  return elements() * (fp32 ? 4 : 2);
}

int64_t WeightGroup::parameters() const {
  int64_t n = 0;
  for (const WeightTensor& t : tensors) n += t.elements();
  return n;
}

int64_t WeightGroup::indexer_parameters() const {
  int64_t n = 0;
  for (const WeightTensor& t : tensors) {
    if (t.name.find(".self_attn.indexer.") != std::string::npos) n += t.elements();
  }
  return n;
}

int64_t WeightGroup::device_bytes(const QuantConfig& quant) const {
  int64_t n = 0;
  for (const WeightTensor& t : tensors) n += t.device_bytes(quant);
  return n;
}

int64_t WeightInventory::parameters() const {
  int64_t n = embedding.parameters() + head.parameters();
  for (const WeightGroup& g : layers) n += g.parameters();
  return n;
}

int64_t WeightInventory::indexer_parameters() const {
  int64_t n = 0;
  for (const WeightGroup& g : layers) n += g.indexer_parameters();
  return n;
}

int64_t WeightInventory::device_bytes(const QuantConfig& quant) const {
  int64_t n = embedding.device_bytes(quant) + head.device_bytes(quant);
  for (const WeightGroup& g : layers) n += g.device_bytes(quant);
  return n;
}

StatusOr<WeightInventory> InventoryFromConfig(const ModelConfig& c) {
  RETURN_IF_ERROR(CheckSizes(c));
  if (c.pattern.num_layers() != c.num_layers || static_cast<int64_t>(c.layer_is_moe.size()) != c.num_layers) {
    return InvalidArgument(c.source + ": pattern or mlp_layer_types does not have one entry per layer");
  }
  WeightInventory inv;
  inv.embedding.layer = -1;
  inv.embedding.tensors.push_back({"model.embed_tokens.weight", c.vocab_size, c.hidden_size, 1, false, false});
  for (int l = 0; l < c.num_layers; ++l) inv.layers.push_back(LayerWeights(c, l));
  inv.head.layer = static_cast<int>(c.num_layers);
  inv.head.tensors.push_back({"model.norm.weight", c.hidden_size, 1, 1, false, false});
  if (!c.tie_word_embeddings) inv.head.tensors.push_back({"lm_head.weight", c.vocab_size, c.hidden_size, 1, false, false});
  // With every dimension <= 2^24 and experts <= 2^16, a tensor has < 2^64 elements only if
  // checked; the sum of all elements times 4 bytes must fit as well.
  int64_t total = 0;
  auto add_group = [&](const WeightGroup& g) -> Status {
    for (const WeightTensor& t : g.tensors) {
      ASSIGN_OR_RETURN(int64_t area, CheckedMul(t.rows, t.cols, c.source + ": tensor '" + t.name + "'"));
      ASSIGN_OR_RETURN(int64_t n, CheckedMul(area, t.copies, c.source + ": tensor '" + t.name + "'"));
      ASSIGN_OR_RETURN(int64_t bytes, CheckedMul(n, 4, c.source + ": tensor '" + t.name + "'"));
      if (__builtin_add_overflow(total, bytes, &total)) return InvalidArgument(c.source + ": model size overflows 64 bits");
    }
    return Status::Ok();
  };
  RETURN_IF_ERROR(add_group(inv.embedding));
  for (const WeightGroup& g : inv.layers) RETURN_IF_ERROR(add_group(g));
  RETURN_IF_ERROR(add_group(inv.head));
  return inv;
}

}  // namespace indexcache
