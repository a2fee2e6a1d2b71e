// indexcache info: what a model directory holds, from config.json and the safetensors headers
// alone (no weights are read, so it is instant even for a 600B checkpoint). A directory with
// config.json and no safetensors (model.safetensors or model.safetensors.index.json), or
// --config-only, gets the parameter count and dtypes from the config (parallel/weight_inventory.h).
#include <cstdio>
#include <map>

#include <nlohmann/json.hpp>

#include "core/safetensors.h"
#include "core/file_util.h"
#include "model/config.h"
#include "parallel/weight_inventory.h"
#include "tools/commands.h"

namespace indexcache {

namespace {

std::string WithCommas(int64_t n) {
  std::string s = std::to_string(n);
  for (int i = static_cast<int>(s.size()) - 3; i > 0; i -= 3) s.insert(i, ",");
  return s;
}

bool EndsWith(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

}  // namespace

Status RunInfo(const Flags& flags) {
  const std::string dir = *flags.Get("model");
  ASSIGN_OR_RETURN(ModelConfig c, LoadModelConfig(dir));
  IndexPattern pattern = c.pattern;
  std::string pattern_source = "config.json";
  if (auto spec = flags.Get("pattern")) {
    ASSIGN_OR_RETURN(pattern, IndexPattern::Parse(*spec, static_cast<int>(c.num_layers)));
    pattern_source = "--pattern";
  }
  int64_t params = 0, indexer_params = 0;
  std::map<std::string, int64_t> dtype_tensors;
  const bool config_only = flags.GetBool("config-only") || (!FileExists(JoinPath(dir, "model.safetensors")) &&
                                                            !FileExists(JoinPath(dir, "model.safetensors.index.json")));
  std::string params_source = "safetensors headers";
  if (config_only) {
    ASSIGN_OR_RETURN(WeightInventory inv, InventoryFromConfig(c));
    params = inv.parameters();
    indexer_params = inv.indexer_parameters();
    params_source = "config.json (no weights read; MTP block not counted)";
    auto count = [&](const WeightGroup& g) {
      for (const WeightTensor& t : g.tensors) {
        const char* dtype = t.fp32 ? "F32" : (t.fp8 && c.quant.fp8) ? "F8_E4M3" : "BF16";
        dtype_tensors[dtype] += t.copies;
      }
    };
    count(inv.embedding);
    for (const WeightGroup& g : inv.layers) count(g);
    count(inv.head);
  }
  SafetensorsCheckpoint ckpt;
  if (!config_only) {
    ASSIGN_OR_RETURN(ckpt, SafetensorsCheckpoint::Open(dir));
  }
  for (const std::string& name : ckpt.names()) {
    ASSIGN_OR_RETURN(Tensor t, ckpt.Get(name));
    if (EndsWith(name, "_scale_inv")) continue;
    params += t.numel();
    if (name.find(".indexer.") != std::string::npos) indexer_params += t.numel();
    ++dtype_tensors[DTypeName(t.dtype())];
  }
  for (int l = 0; l < c.num_layers; ++l) {
    const std::string probe = "model.layers." + std::to_string(l) + ".self_attn.indexer.wk.weight";
    if (!config_only && pattern.is_full(l) && !ckpt.Has(probe)) {
      return InvalidArgument(dir + ": pattern " + pattern.ToString() + " makes layer " + std::to_string(l) +
                             " Full but tensor '" + probe + "' is missing");
    }
  }
  int moe_layers = 0;
  for (bool m : c.layer_is_moe) moe_layers += m;
  const char* rope = c.rope.type == RopeType::kYarn ? "yarn" : "default";

  if (flags.GetBool("json")) {
    nlohmann::json j = {
        {"model", dir},
        {"model_type", ModelTypeName(c.model_type)},
        {"num_layers", c.num_layers},
        {"moe_layers", moe_layers},
        {"hidden_size", c.hidden_size},
        {"vocab_size", c.vocab_size},
        {"num_heads", c.num_heads},
        {"q_lora_rank", c.q_lora_rank},
        {"kv_lora_rank", c.kv_lora_rank},
        {"qk_nope_head_dim", c.qk_nope_head_dim},
        {"qk_rope_head_dim", c.qk_rope_head_dim},
        {"v_head_dim", c.v_head_dim},
        {"index_n_heads", c.index_n_heads},
        {"index_head_dim", c.index_head_dim},
        {"index_topk", c.index_topk},
        {"indexer_rope", c.indexer_rope_interleave ? "interleaved" : "half-split"},
        {"n_routed_experts", c.n_routed_experts},
        {"rope", rope},
        {"parameters", params},
        {"parameters_from", params_source},
        {"indexer_parameters", indexer_params},
        {"dtypes", dtype_tensors},
        {"fp8", c.quant.fp8},
        {"pattern", pattern.ToString()},
        {"pattern_source", pattern_source},
        {"full_layers", pattern.num_full()},
    };
    std::printf("%s\n", j.dump(2).c_str());
    return Status::Ok();
  }
  std::printf("model          %s\n", dir.c_str());
  std::printf("model_type     %s\n", ModelTypeName(c.model_type));
  std::printf("layers         %lld (%d dense MLP, %d MoE), hidden %lld, vocab %lld\n",
              static_cast<long long>(c.num_layers), static_cast<int>(c.num_layers) - moe_layers, moe_layers,
              static_cast<long long>(c.hidden_size), static_cast<long long>(c.vocab_size));
  std::printf("attention      MLA, %lld heads, q_lora %lld, kv_lora %lld, qk nope %lld + rope %lld, v %lld, scale %.6g\n",
              static_cast<long long>(c.num_heads), static_cast<long long>(c.q_lora_rank),
              static_cast<long long>(c.kv_lora_rank), static_cast<long long>(c.qk_nope_head_dim),
              static_cast<long long>(c.qk_rope_head_dim), static_cast<long long>(c.v_head_dim), c.softmax_scale());
  std::printf("indexer        %lld heads x %lld, top-k %lld, %s rope\n", static_cast<long long>(c.index_n_heads),
              static_cast<long long>(c.index_head_dim), static_cast<long long>(c.index_topk),
              c.indexer_rope_interleave ? "interleaved" : "half-split");
  if (moe_layers) {
    std::printf("moe            %lld routed experts (top %lld; %lld groups, keep %lld), %lld shared, intermediate %lld\n",
                static_cast<long long>(c.n_routed_experts), static_cast<long long>(c.num_experts_per_tok),
                static_cast<long long>(c.n_group), static_cast<long long>(c.topk_group),
                static_cast<long long>(c.n_shared_experts), static_cast<long long>(c.moe_intermediate_size));
  }
  std::printf("rope           %s, theta %g", rope, c.rope.theta);
  if (c.rope.type == RopeType::kYarn) std::printf(", factor %g, attention factor %.6g", c.rope.factor, c.rope.attention_factor);
  std::printf("\nparameters     %s (indexers %s; from %s)\n", WithCommas(params).c_str(),
              WithCommas(indexer_params).c_str(), params_source.c_str());
  std::printf("dtypes        ");
  for (const auto& [dtype, n] : dtype_tensors) std::printf(" %s (%lld tensors)", dtype.c_str(), static_cast<long long>(n));
  std::printf("\n");
  if (c.quant.fp8) {
    std::printf("quantization   fp8 e4m3, %lldx%lld blocks\n", static_cast<long long>(c.quant.block_rows),
                static_cast<long long>(c.quant.block_cols));
  }
  std::printf("pattern        %s (%d of %lld layers Full; from %s)\n", pattern.ToString().c_str(), pattern.num_full(),
              static_cast<long long>(c.num_layers), pattern_source.c_str());
  return Status::Ok();
}

}  // namespace indexcache
