#include "model/model_writer.h"

#include <sys/stat.h>

#include "core/file_util.h"
#include "core/safetensors.h"

namespace indexcache {

namespace {

// Views of the host matrices (the weights outlive the write).
class TensorList {
 public:
  void Add(const std::string& name, const Matrix& m) {
    tensors_.push_back({name, Tensor::View(DType::kF32, {m.rows(), m.cols()}, const_cast<float*>(m.data()), nullptr)});
  }
  void Add(const std::string& name, const Vector& v) {
    tensors_.push_back({name, Tensor::View(DType::kF32, {v.size()}, const_cast<float*>(v.data()), nullptr)});
  }
  void AddMlp(const std::string& prefix, const MlpWeights& m) {
    Add(prefix + "gate_proj.weight", m.gate);
    Add(prefix + "up_proj.weight", m.up);
    Add(prefix + "down_proj.weight", m.down);
  }
  const NamedTensors& tensors() const { return tensors_; }

 private:
  NamedTensors tensors_;
};

}  // namespace

Status WriteModelDirectory(const std::string& dir, const nlohmann::json& config_json, const ModelWeights& w) {
  if (::mkdir(dir.c_str(), 0755) != 0 && errno != EEXIST) return Internal(dir + ": cannot create the directory");
  TensorList t;
  t.Add("model.embed_tokens.weight", w.embed);
  t.Add("model.norm.weight", w.final_norm);
  t.Add("lm_head.weight", w.lm_head);
  for (size_t l = 0; l < w.layers.size(); ++l) {
    const LayerWeights& L = w.layers[l];
    if (!L.loaded) return InvalidArgument("layer " + std::to_string(l) + " is not loaded: cannot write it");
    const std::string p = "model.layers." + std::to_string(l) + ".";
    const std::string a = p + "self_attn.";
    t.Add(p + "input_layernorm.weight", L.input_norm);
    t.Add(p + "post_attention_layernorm.weight", L.post_attention_norm);
    t.Add(a + "q_a_proj.weight", L.q_a);
    t.Add(a + "q_a_layernorm.weight", L.q_a_norm);
    t.Add(a + "q_b_proj.weight", L.q_b);
    t.Add(a + "kv_a_proj_with_mqa.weight", L.kv_a);
    t.Add(a + "kv_a_layernorm.weight", L.kv_a_norm);
    t.Add(a + "kv_b_proj.weight", L.kv_b);
    t.Add(a + "o_proj.weight", L.o);
    if (L.has_indexer) {
      t.Add(a + "indexer.wq_b.weight", L.indexer.wq_b);
      t.Add(a + "indexer.wk.weight", L.indexer.wk);
      t.Add(a + "indexer.k_norm.weight", L.indexer.k_norm_weight);
      t.Add(a + "indexer.k_norm.bias", L.indexer.k_norm_bias);
      t.Add(a + "indexer.weights_proj.weight", L.indexer.weights_proj);
    }
    const std::string m = p + "mlp.";
    if (!L.is_moe) {
      t.AddMlp(m, L.mlp);
      continue;
    }
    t.Add(m + "gate.weight", L.moe.router);
    t.Add(m + "gate.e_score_correction_bias", L.moe.score_bias);
    for (size_t e = 0; e < L.moe.experts.size(); ++e) t.AddMlp(m + "experts." + std::to_string(e) + ".", L.moe.experts[e]);
    if (L.moe.has_shared) t.AddMlp(m + "shared_experts.", L.moe.shared);
  }
  RETURN_IF_ERROR(WriteFileAtomic(JoinPath(dir, "config.json"), config_json.dump(2) + "\n"));
  return WriteSafetensors(JoinPath(dir, "model.safetensors"), t.tensors());
}

}  // namespace indexcache
