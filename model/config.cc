#include "model/config.h"

#include <cmath>

#include "core/file_util.h"

namespace indexcache {

using json = nlohmann::json;

const char* ModelTypeName(ModelType type) {
  return type == ModelType::kDeepseekV32 ? "deepseek_v32" : "glm_moe_dsa";
}

namespace {

// Field readers: each error is "<file>: field '<name>' ...".
class Fields {
 public:
  Fields(const json& j, const std::string& source) : j_(j), source_(source) {}

  Status Error(const std::string& field, const std::string& what) const {
    return InvalidArgument(source_ + ": field '" + field + "' " + what);
  }
  bool Has(const std::string& f) const { return j_.contains(f) && !j_[f].is_null(); }

  StatusOr<int64_t> Int(const std::string& f, int64_t min_value) const {
    if (!Has(f)) return Error(f, "is missing");
    if (!j_[f].is_number_integer()) return Error(f, "must be an integer, got " + j_[f].dump());
    const int64_t v = j_[f].get<int64_t>();
    if (v < min_value) return Error(f, "must be >= " + std::to_string(min_value) + ", got " + std::to_string(v));
    return v;
  }
  StatusOr<int64_t> IntOr(const std::string& f, int64_t def, int64_t min_value) const {
    return Has(f) ? Int(f, min_value) : StatusOr<int64_t>(def);
  }
  StatusOr<double> Double(const json& obj, const std::string& f, const std::string& path) const {
    if (!obj[f].is_number()) return Error(path, "must be a number, got " + obj[f].dump());
    return obj[f].get<double>();
  }
  StatusOr<double> DoubleOr(const std::string& f, double def) const {
    return Has(f) ? Double(j_, f, f) : StatusOr<double>(def);
  }
  StatusOr<bool> BoolOr(const std::string& f, bool def) const {
    if (!Has(f)) return def;
    if (!j_[f].is_boolean()) return Error(f, "must be true or false, got " + j_[f].dump());
    return j_[f].get<bool>();
  }

 private:
  const json& j_;
  const std::string& source_;
};

double YarnGetMscale(double scale, double mscale) {
  if (scale <= 1.0) return 1.0;
  return 0.1 * mscale * std::log(scale) + 1.0;
}

Status ParseRope(const json& j, const Fields& fields, ModelConfig* c) {
  // transformers >= 5 writes `rope_parameters` (with rope_theta inside); released checkpoints write
  // `rope_theta` and an optional `rope_scaling` at top level.
  json params = json::object();
  std::string field = "rope_parameters";
  if (fields.Has("rope_parameters")) {
    params = j["rope_parameters"];
  } else if (fields.Has("rope_scaling")) {
    params = j["rope_scaling"];
    field = "rope_scaling";
  }
  if (!params.is_object()) return fields.Error(field, "must be an object");
  RopeConfig& r = c->rope;
  if (params.contains("rope_theta") && !params["rope_theta"].is_null()) {
    ASSIGN_OR_RETURN(r.theta, fields.Double(params, "rope_theta", field + ".rope_theta"));
  } else {
    ASSIGN_OR_RETURN(r.theta, fields.DoubleOr("rope_theta", 10000.0));
  }
  if (!(r.theta > 0)) return fields.Error("rope_theta", "must be positive");
  std::string type = "default";
  for (const char* key : {"rope_type", "type"}) {
    if (params.contains(key) && params[key].is_string()) {
      type = params[key].get<std::string>();
      break;
    }
  }
  if (type == "default") return Status::Ok();
  if (type != "yarn") return Unimplemented(c->source + ": field '" + field + ".rope_type' is '" + type + "' (supported: default, yarn)");
  r.type = RopeType::kYarn;
  auto num = [&](const char* key, double def, double* out) -> Status {
    if (params.contains(key) && !params[key].is_null()) {
      ASSIGN_OR_RETURN(*out, fields.Double(params, key, field + "." + key));
    } else {
      *out = def;
    }
    return Status::Ok();
  };
  if (params.contains("original_max_position_embeddings") && !params["original_max_position_embeddings"].is_null()) {
    if (!params["original_max_position_embeddings"].is_number_integer()) {
      return fields.Error(field + ".original_max_position_embeddings", "must be an integer");
    }
    r.original_max_position_embeddings = params["original_max_position_embeddings"].get<int64_t>();
  } else if (fields.Has("original_max_position_embeddings")) {
    ASSIGN_OR_RETURN(r.original_max_position_embeddings, fields.Int("original_max_position_embeddings", 1));
  } else {
    r.original_max_position_embeddings = c->max_position_embeddings;
  }
  if (r.original_max_position_embeddings < 1) return fields.Error(field + ".original_max_position_embeddings", "must be positive");
  RETURN_IF_ERROR(num("factor", static_cast<double>(c->max_position_embeddings) / r.original_max_position_embeddings, &r.factor));
  RETURN_IF_ERROR(num("mscale", 0.0, &r.mscale));
  RETURN_IF_ERROR(num("mscale_all_dim", 0.0, &r.mscale_all_dim));
  // transformers: `beta_fast or 32`, so an explicit 0 also means the default.
  RETURN_IF_ERROR(num("beta_fast", 32.0, &r.beta_fast));
  if (r.beta_fast == 0) r.beta_fast = 32.0;
  RETURN_IF_ERROR(num("beta_slow", 1.0, &r.beta_slow));
  if (r.beta_slow == 0) r.beta_slow = 1.0;
  if (params.contains("truncate") && params["truncate"].is_boolean()) r.truncate = params["truncate"].get<bool>();
  if (params.contains("attention_factor") && !params["attention_factor"].is_null()) {
    ASSIGN_OR_RETURN(r.attention_factor, fields.Double(params, "attention_factor", field + ".attention_factor"));
  } else if (r.mscale != 0 && r.mscale_all_dim != 0) {
    r.attention_factor = YarnGetMscale(r.factor, r.mscale) / YarnGetMscale(r.factor, r.mscale_all_dim);
  } else {
    r.attention_factor = YarnGetMscale(r.factor, 1.0);
  }
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
  if (!f.Has("model_type") || !j["model_type"].is_string()) return f.Error("model_type", "is missing");
  const std::string model_type = j["model_type"].get<std::string>();
  if (model_type == "deepseek_v32") {
    c.model_type = ModelType::kDeepseekV32;
  } else if (model_type == "glm_moe_dsa") {
    c.model_type = ModelType::kGlmMoeDsa;
  } else {
    return f.Error("model_type", "is '" + model_type + "' (supported: deepseek_v32, glm_moe_dsa)");
  }
  const bool glm = c.model_type == ModelType::kGlmMoeDsa;

  ASSIGN_OR_RETURN(c.vocab_size, f.Int("vocab_size", 1));
  ASSIGN_OR_RETURN(c.hidden_size, f.Int("hidden_size", 1));
  ASSIGN_OR_RETURN(c.num_layers, f.Int("num_hidden_layers", 1));
  ASSIGN_OR_RETURN(c.num_heads, f.Int("num_attention_heads", 1));
  ASSIGN_OR_RETURN(int64_t kv_heads, f.IntOr("num_key_value_heads", c.num_heads, 1));
  if (kv_heads != c.num_heads) return f.Error("num_key_value_heads", "must equal num_attention_heads for MLA");
  if (!f.Has("q_lora_rank")) return f.Error("q_lora_rank", "is missing (DSA's indexer reads the q latent)");
  ASSIGN_OR_RETURN(c.q_lora_rank, f.Int("q_lora_rank", 1));
  ASSIGN_OR_RETURN(c.kv_lora_rank, f.Int("kv_lora_rank", 1));
  ASSIGN_OR_RETURN(c.qk_nope_head_dim, f.Int("qk_nope_head_dim", 1));
  ASSIGN_OR_RETURN(c.qk_rope_head_dim, f.Int("qk_rope_head_dim", 2));
  if (c.qk_rope_head_dim % 2) return f.Error("qk_rope_head_dim", "must be even");
  ASSIGN_OR_RETURN(c.v_head_dim, f.Int("v_head_dim", 1));
  ASSIGN_OR_RETURN(c.index_topk, f.Int("index_topk", 1));
  ASSIGN_OR_RETURN(c.index_n_heads, f.IntOr("index_n_heads", glm ? 32 : 64, 1));
  ASSIGN_OR_RETURN(c.index_head_dim, f.IntOr("index_head_dim", 128, 1));
  if (c.index_head_dim < c.qk_rope_head_dim) return f.Error("index_head_dim", "must be >= qk_rope_head_dim");
  ASSIGN_OR_RETURN(c.indexer_rope_interleave, f.BoolOr("indexer_rope_interleave", glm));
  ASSIGN_OR_RETURN(c.rms_norm_eps, f.DoubleOr("rms_norm_eps", glm ? 1e-5 : 1e-6));
  if (!(c.rms_norm_eps > 0)) return f.Error("rms_norm_eps", "must be positive");
  ASSIGN_OR_RETURN(c.max_position_embeddings, f.IntOr("max_position_embeddings", glm ? 202752 : 163840, 1));
  ASSIGN_OR_RETURN(c.tie_word_embeddings, f.BoolOr("tie_word_embeddings", false));
  ASSIGN_OR_RETURN(bool attention_bias, f.BoolOr("attention_bias", false));
  if (attention_bias) return Unimplemented(source + ": field 'attention_bias' = true is not supported (no DSA release uses it)");
  if (f.Has("hidden_act") && j["hidden_act"] != "silu") return f.Error("hidden_act", "must be \"silu\", got " + j["hidden_act"].dump());

  // Dense vs MoE layers: `mlp_layer_types` wins over `first_k_dense_replace`.
  c.layer_is_moe.assign(c.num_layers, false);
  if (f.Has("mlp_layer_types")) {
    const json& types = j["mlp_layer_types"];
    if (!types.is_array() || static_cast<int64_t>(types.size()) != c.num_layers) {
      return f.Error("mlp_layer_types", "must be a list with one entry per layer");
    }
    for (int64_t l = 0; l < c.num_layers; ++l) {
      if (types[l] == "sparse") c.layer_is_moe[l] = true;
      else if (types[l] != "dense") return f.Error("mlp_layer_types", "[" + std::to_string(l) + "] must be \"dense\" or \"sparse\"");
    }
  } else {
    ASSIGN_OR_RETURN(int64_t first_dense, f.IntOr("first_k_dense_replace", 3, 0));
    const bool has_experts = f.Has("n_routed_experts") && j["n_routed_experts"].is_number_integer() &&
                             j["n_routed_experts"].get<int64_t>() > 0;
    for (int64_t l = 0; l < c.num_layers; ++l) c.layer_is_moe[l] = has_experts && l >= first_dense;
  }
  bool any_dense = false, any_moe = false;
  for (bool m : c.layer_is_moe) (m ? any_moe : any_dense) = true;
  if (any_dense) {
    ASSIGN_OR_RETURN(c.intermediate_size, f.Int("intermediate_size", 1));
  }
  if (any_moe) {
    ASSIGN_OR_RETURN(c.moe_intermediate_size, f.Int("moe_intermediate_size", 1));
    ASSIGN_OR_RETURN(c.n_routed_experts, f.Int("n_routed_experts", 1));
    ASSIGN_OR_RETURN(c.n_shared_experts, f.IntOr("n_shared_experts", 0, 0));
    ASSIGN_OR_RETURN(c.num_experts_per_tok, f.Int("num_experts_per_tok", 1));
    ASSIGN_OR_RETURN(c.n_group, f.IntOr("n_group", 1, 1));
    ASSIGN_OR_RETURN(c.topk_group, f.IntOr("topk_group", 1, 1));
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

  if (f.Has("quantization_config")) {
    const json& q = j["quantization_config"];
    if (!q.is_object()) return f.Error("quantization_config", "must be an object");
    const std::string method = q.value("quant_method", "");
    if (method != "fp8") return f.Error("quantization_config.quant_method", "is '" + method + "' (supported: fp8)");
    if (q.contains("fmt") && q["fmt"] != "e4m3") return f.Error("quantization_config.fmt", "must be \"e4m3\"");
    c.quant.fp8 = true;
    if (q.contains("weight_block_size") && !q["weight_block_size"].is_null()) {
      const json& b = q["weight_block_size"];
      if (!b.is_array() || b.size() != 2 || !b[0].is_number_integer() || !b[1].is_number_integer() ||
          b[0].get<int64_t>() < 1 || b[1].get<int64_t>() < 1) {
        return f.Error("quantization_config.weight_block_size", "must be two positive integers");
      }
      c.quant.block_rows = b[0].get<int64_t>();
      c.quant.block_cols = b[1].get<int64_t>();
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
  json j = json::parse(text, nullptr, false);
  if (j.is_discarded()) return InvalidArgument(path + ": malformed JSON");
  return ParseModelConfig(j, path);
}

}  // namespace indexcache
