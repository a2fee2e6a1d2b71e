#include "model/config.h"

#include <algorithm>
#include <cmath>

#include "core/file_util.h"
#include "core/json_util.h"
#include "core/limits.h"

namespace indexcache {

using json = nlohmann::json;

const char* ModelTypeName(ModelType type) {
  return type == ModelType::kDeepseekV32 ? "deepseek_v32" : "glm_moe_dsa";
}

namespace {

// Field readers: each error is "<file>: field '<name>' ...". Every access goes through
// JsonFields (core/json_util.h): no nlohmann exception escapes and bad values are echoed briefly.
// Sizes are bounded by core/limits.h so that no product of them can overflow later.
class Fields : public JsonFields {
 public:
  Fields(const json& j, const std::string& source) : JsonFields(j, source), j_(j) {}
  // A bounded size.
  StatusOr<int64_t> Size(const std::string& f, int64_t min_value, int64_t max_value) const {
    return Int(f, min_value, max_value);
  }
  StatusOr<int64_t> SizeOr(const std::string& f, int64_t def, int64_t min_value, int64_t max_value) const {
    return IntOr(f, def, min_value, max_value);
  }
  const json& json_value() const { return j_; }

 private:
  const json& j_;
};

double YarnGetMscale(double scale, double mscale) {
  if (scale <= 1.0) return 1.0;
  return 0.1 * mscale * std::log(scale) + 1.0;
}

Status ParseRope(const json& j, const Fields& fields, ModelConfig* c) {
  // transformers >= 5 writes `rope_parameters` (with rope_theta inside); released checkpoints write
  // `rope_theta` and an optional `rope_scaling` at top level.
  const json empty = json::object();
  const json* params = &empty;
  std::string field = "rope_parameters";
  if (fields.Has("rope_parameters")) {
    params = fields.Find("rope_parameters");
  } else if (fields.Has("rope_scaling")) {
    params = fields.Find("rope_scaling");
    field = "rope_scaling";
  }
  if (!params->is_object()) return fields.Error(field, "must be an object, got " + JsonBrief(*params));
  const JsonFields p(*params, c->source, field + ".");
  RopeConfig& r = c->rope;
  if (p.Has("rope_theta")) {
    ASSIGN_OR_RETURN(r.theta, p.Double("rope_theta"));
  } else {
    ASSIGN_OR_RETURN(r.theta, fields.DoubleOr("rope_theta", 10000.0));
  }
  if (!(r.theta > 0)) return fields.Error("rope_theta", "must be positive");
  // rope_type (transformers) or type (older configs); a present value must be a string: a number
  // here used to mean default rope silently.
  std::string type = "default", type_key = "rope_type";
  if (p.Has("rope_type")) {
    ASSIGN_OR_RETURN(type, p.String("rope_type"));
  } else if (p.Has("type")) {
    type_key = "type";
    ASSIGN_OR_RETURN(type, p.String("type"));
  }
  if (type == "default") return Status::Ok();
  if (type != "yarn") {
    return Unimplemented(c->source + ": field '" + field + "." + type_key + "' is " + JsonBrief(json(type)) +
                         " (supported: default, yarn)");
  }
  r.type = RopeType::kYarn;
  if (p.Has("original_max_position_embeddings")) {
    ASSIGN_OR_RETURN(r.original_max_position_embeddings, p.Int("original_max_position_embeddings", 1, kMaxSeqLen));
  } else if (fields.Has("original_max_position_embeddings")) {
    ASSIGN_OR_RETURN(r.original_max_position_embeddings, fields.Size("original_max_position_embeddings", 1, kMaxSeqLen));
  } else {
    r.original_max_position_embeddings = c->max_position_embeddings;
  }
  ASSIGN_OR_RETURN(r.factor, p.DoubleOr("factor", static_cast<double>(c->max_position_embeddings) /
                                                      r.original_max_position_embeddings));
  // yarn stretches the context by `factor`: zero or negative is meaningless (and makes log(factor)
  // and the frequency blend NaN).
  if (!(r.factor > 0)) return p.Error("factor", "must be positive, got " + JsonBrief(json(r.factor)));
  ASSIGN_OR_RETURN(r.mscale, p.DoubleOr("mscale", 0.0));
  ASSIGN_OR_RETURN(r.mscale_all_dim, p.DoubleOr("mscale_all_dim", 0.0));
  // transformers: `beta_fast or 32`, so an explicit 0 also means the default.
  ASSIGN_OR_RETURN(r.beta_fast, p.DoubleOr("beta_fast", 32.0));
  if (r.beta_fast == 0) r.beta_fast = 32.0;
  ASSIGN_OR_RETURN(r.beta_slow, p.DoubleOr("beta_slow", 1.0));
  if (r.beta_slow == 0) r.beta_slow = 1.0;
  ASSIGN_OR_RETURN(r.truncate, p.BoolOr("truncate", true));
  if (p.Has("attention_factor")) {
    ASSIGN_OR_RETURN(r.attention_factor, p.Double("attention_factor"));
  } else if (r.mscale != 0 && r.mscale_all_dim != 0) {
    r.attention_factor = YarnGetMscale(r.factor, r.mscale) / YarnGetMscale(r.factor, r.mscale_all_dim);
  } else {
    r.attention_factor = YarnGetMscale(r.factor, 1.0);
  }
  if (!std::isfinite(r.attention_factor)) return p.Error("attention_factor", "is not finite");
  return Status::Ok();
}

}  // namespace

double ModelConfig::softmax_scale() const {
  double scale = 1.0 / std::sqrt(static_cast<double>(qk_head_dim()));
  // transformers' yarn_apply_mscale: any non-default rope with mscale_all_dim set.
  if (rope.type != RopeType::kDefault && rope.mscale_all_dim != 0) {
    const double m = YarnGetMscale(rope.factor, rope.mscale_all_dim);
    scale *= m * m;
  }
  return scale;
}

StatusOr<ModelConfig> ParseModelConfig(const json& j, const std::string& source) {
  if (!j.is_object()) return InvalidArgument(source + ": not a JSON object");
  ModelConfig c;
  c.source = source;
  Fields f(j, source);
  if (!f.Has("model_type")) return f.Error("model_type", "is missing");
  ASSIGN_OR_RETURN(const std::string model_type, f.String("model_type"));
  if (model_type == "deepseek_v32") {
    c.model_type = ModelType::kDeepseekV32;
  } else if (model_type == "glm_moe_dsa") {
    c.model_type = ModelType::kGlmMoeDsa;
  } else {
    return f.Error("model_type", "is " + JsonBrief(json(model_type)) + " (supported: deepseek_v32, glm_moe_dsa)");
  }
  const bool glm = c.model_type == ModelType::kGlmMoeDsa;

  // Every size is bounded (core/limits.h): far above any released model, low enough that no
  // product of them overflows and no loop over them runs for hours.
  ASSIGN_OR_RETURN(c.vocab_size, f.Size("vocab_size", 1, kMaxVocab));
  ASSIGN_OR_RETURN(c.hidden_size, f.Size("hidden_size", 1, kMaxDim));
  ASSIGN_OR_RETURN(c.num_layers, f.Size("num_hidden_layers", 1, kMaxLayers));
  ASSIGN_OR_RETURN(c.num_heads, f.Size("num_attention_heads", 1, kMaxHeads));
  ASSIGN_OR_RETURN(int64_t kv_heads, f.SizeOr("num_key_value_heads", c.num_heads, 1, kMaxHeads));
  if (kv_heads != c.num_heads) return f.Error("num_key_value_heads", "must equal num_attention_heads for MLA");
  if (!f.Has("q_lora_rank")) return f.Error("q_lora_rank", "is missing (DSA's indexer reads the q latent)");
  ASSIGN_OR_RETURN(c.q_lora_rank, f.Size("q_lora_rank", 1, kMaxDim));
  ASSIGN_OR_RETURN(c.kv_lora_rank, f.Size("kv_lora_rank", 1, kMaxDim));
  ASSIGN_OR_RETURN(c.qk_nope_head_dim, f.Size("qk_nope_head_dim", 1, kMaxDim));
  ASSIGN_OR_RETURN(c.qk_rope_head_dim, f.Size("qk_rope_head_dim", 2, kMaxDim));
  if (c.qk_rope_head_dim % 2) return f.Error("qk_rope_head_dim", "must be even");
  ASSIGN_OR_RETURN(c.v_head_dim, f.Size("v_head_dim", 1, kMaxDim));
  ASSIGN_OR_RETURN(c.index_topk, f.Size("index_topk", 1, kMaxTopk));
  ASSIGN_OR_RETURN(c.index_n_heads, f.SizeOr("index_n_heads", glm ? 32 : 64, 1, kMaxHeads));
  ASSIGN_OR_RETURN(c.index_head_dim, f.SizeOr("index_head_dim", 128, 1, kMaxDim));
  if (c.index_head_dim < c.qk_rope_head_dim) return f.Error("index_head_dim", "must be >= qk_rope_head_dim");
  ASSIGN_OR_RETURN(c.indexer_rope_interleave, f.BoolOr("indexer_rope_interleave", glm));
  ASSIGN_OR_RETURN(c.rms_norm_eps, f.DoubleOr("rms_norm_eps", glm ? 1e-5 : 1e-6));
  if (!(c.rms_norm_eps > 0)) return f.Error("rms_norm_eps", "must be positive");
  ASSIGN_OR_RETURN(c.max_position_embeddings, f.SizeOr("max_position_embeddings", glm ? 202752 : 163840, 1, kMaxSeqLen));
  ASSIGN_OR_RETURN(c.tie_word_embeddings, f.BoolOr("tie_word_embeddings", false));
  ASSIGN_OR_RETURN(bool attention_bias, f.BoolOr("attention_bias", false));
  if (attention_bias) return Unimplemented(source + ": field 'attention_bias' = true is not supported (no DSA release uses it)");
  ASSIGN_OR_RETURN(const std::string hidden_act, f.StringOr("hidden_act", "silu"));
  if (hidden_act != "silu") return f.Error("hidden_act", "must be \"silu\", got " + JsonBrief(json(hidden_act)));

  // Dense vs MoE layers: `mlp_layer_types` wins over `first_k_dense_replace`.
  c.layer_is_moe.assign(c.num_layers, false);
  if (const json* types = f.Find("mlp_layer_types")) {
    if (!types->is_array() || static_cast<int64_t>(types->size()) != c.num_layers) {
      return f.Error("mlp_layer_types", "must be a list with one entry per layer");
    }
    for (int64_t l = 0; l < c.num_layers; ++l) {
      const json& t = (*types)[l];
      if (t == "sparse") c.layer_is_moe[l] = true;
      else if (t != "dense") {
        return f.Error("mlp_layer_types", "[" + std::to_string(l) + "] must be \"dense\" or \"sparse\", got " + JsonBrief(t));
      }
    }
  } else {
    ASSIGN_OR_RETURN(int64_t first_dense, f.SizeOr("first_k_dense_replace", 3, 0, kMaxLayers));
    const json* experts = f.Find("n_routed_experts");
    const bool has_experts = experts && experts->is_number_integer() && experts->get<int64_t>() > 0;
    for (int64_t l = 0; l < c.num_layers; ++l) c.layer_is_moe[l] = has_experts && l >= first_dense;
  }
  bool any_dense = false, any_moe = false;
  for (bool m : c.layer_is_moe) (m ? any_moe : any_dense) = true;
  if (any_dense) {
    ASSIGN_OR_RETURN(c.intermediate_size, f.Size("intermediate_size", 1, kMaxDim));
  }
  if (any_moe) {
    ASSIGN_OR_RETURN(c.moe_intermediate_size, f.Size("moe_intermediate_size", 1, kMaxDim));
    ASSIGN_OR_RETURN(c.n_routed_experts, f.Size("n_routed_experts", 1, kMaxExperts));
    ASSIGN_OR_RETURN(c.n_shared_experts, f.SizeOr("n_shared_experts", 0, 0, kMaxExperts));
    ASSIGN_OR_RETURN(c.num_experts_per_tok, f.Size("num_experts_per_tok", 1, kMaxExperts));
    ASSIGN_OR_RETURN(c.n_group, f.SizeOr("n_group", 1, 1, kMaxExperts));
    ASSIGN_OR_RETURN(c.topk_group, f.SizeOr("topk_group", 1, 1, kMaxExperts));
    ASSIGN_OR_RETURN(c.norm_topk_prob, f.BoolOr("norm_topk_prob", true));
    ASSIGN_OR_RETURN(c.routed_scaling_factor, f.DoubleOr("routed_scaling_factor", 1.0));
    if (c.n_routed_experts % c.n_group) return f.Error("n_group", "must divide n_routed_experts");
    if (c.topk_group > c.n_group) return f.Error("topk_group", "must be <= n_group");
    if (c.n_group > 1 && c.n_routed_experts / c.n_group < 2) return f.Error("n_group", "leaves fewer than 2 experts per group");
    if (c.num_experts_per_tok > c.topk_group * (c.n_routed_experts / c.n_group)) {
      return f.Error("num_experts_per_tok", "exceeds the experts in topk_group groups");
    }
  }

  RETURN_IF_ERROR(ParseRope(j, f, &c));

  if (const json* qc = f.Find("quantization_config")) {
    if (!qc->is_object()) return f.Error("quantization_config", "must be an object, got " + JsonBrief(*qc));
    const JsonFields q(*qc, source, "quantization_config.");
    ASSIGN_OR_RETURN(const std::string method, q.StringOr("quant_method", ""));
    if (method != "fp8") return q.Error("quant_method", "is " + JsonBrief(json(method)) + " (supported: fp8)");
    ASSIGN_OR_RETURN(const std::string fmt, q.StringOr("fmt", "e4m3"));
    if (fmt != "e4m3") return q.Error("fmt", "must be \"e4m3\", got " + JsonBrief(json(fmt)));
    c.quant.fp8 = true;
    if (const json* b = q.Find("weight_block_size")) {
      if (!b->is_array() || b->size() != 2 || !(*b)[0].is_number_integer() || !(*b)[1].is_number_integer() ||
          (*b)[0].get<int64_t>() < 1 || (*b)[1].get<int64_t>() < 1 || (*b)[0].get<int64_t>() > kMaxDim ||
          (*b)[1].get<int64_t>() > kMaxDim) {
        return q.Error("weight_block_size", "must be two integers in [1, " + std::to_string(kMaxDim) + "], got " +
                                                JsonBrief(*b));
      }
      c.quant.block_rows = (*b)[0].get<int64_t>();
      c.quant.block_cols = (*b)[1].get<int64_t>();
    }
  }

  ASSIGN_OR_RETURN(c.pattern, IndexPattern::FromConfig(j, static_cast<int>(c.num_layers), source));
  c.shared_layers_lack_indexer = f.Has("indexer_types");
  return c;
}

StatusOr<ModelConfig> LoadModelConfig(const std::string& model_dir) {
  const std::string path = JoinPath(model_dir, "config.json");
  if (!FileExists(path)) return NotFound(path + ": no such file");
  ASSIGN_OR_RETURN(std::string text, ReadFileToString(path));
  ASSIGN_OR_RETURN(const json j, ParseJson(text, path));
  return ParseModelConfig(j, path);
}

int64_t ForwardChunkRows(const ModelConfig& c, int64_t activation_bytes) {
  // Per-row activations alive at once inside a chunk: q, q_abs, the latent attention output and
  // its value projection, q_latent, the MLP input and intermediates (a MoE's per-assignment
  // gathered rows, gate and up, and outputs; else the dense MLP's gate and up).
  const int64_t heads = c.num_heads;
  int64_t per_row = heads * (c.qk_head_dim() + c.latent_dim() + c.kv_lora_rank + c.v_head_dim) + c.q_lora_rank +
                    2 * c.hidden_size;
  int64_t mlp = 2 * c.intermediate_size;
  if (c.n_routed_experts > 0) {
    mlp = std::max(mlp, c.num_experts_per_tok * (2 * c.hidden_size + 2 * c.moe_intermediate_size));
  }
  per_row = (per_row + mlp) * std::max<int64_t>(1, activation_bytes);
  return std::max<int64_t>(1, kForwardChunkBytes / per_row);
}

}  // namespace indexcache
