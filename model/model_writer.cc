#include "model/model_writer.h"

#include <sys/stat.h>

#include <algorithm>
#include <array>
#include <cmath>

#include "core/dtype.h"
#include "core/file_util.h"
#include "core/safetensors.h"

namespace indexcache {

namespace {

// The nearest e4m3 code to a magnitude a <= 448, ties to the even code: FloatToFp8E4M3's rounding,
// by binary search over the 127 finite magnitudes (codes 0..126 increase with the value) instead
// of a scan over all of them, which is too slow for a whole model.
class E4M3Encoder {
 public:
  E4M3Encoder() {
    for (int code = 0; code < 127; ++code) magnitudes_[code] = Fp8E4M3ToFloat(static_cast<uint8_t>(code));
  }
  uint8_t Encode(float f) const {
    const uint8_t sign = std::signbit(f) ? 0x80 : 0x00;
    const float a = std::fmin(std::fabs(f), 448.0f);
    const int hi = static_cast<int>(std::lower_bound(magnitudes_.begin(), magnitudes_.end(), a) - magnitudes_.begin());
    if (hi == 0) return sign;
    if (hi == 127) return sign | 126;
    const int lo = hi - 1;
    const float below = a - magnitudes_[lo], above = magnitudes_[hi] - a;
    const int code = below < above ? lo : above < below ? hi : (lo % 2 == 0 ? lo : hi);
    return sign | static_cast<uint8_t>(code);
  }

 private:
  std::array<float, 127> magnitudes_;
};

// Views of the host matrices (the weights outlive the write), or FP8 encodings of them.
class TensorList {
 public:
  explicit TensorList(const Fp8Storage& fp8) : fp8_(fp8) {}
  void Add(const std::string& name, const Matrix& m) {
    tensors_.push_back({name, Tensor::View(DType::kF32, {m.rows(), m.cols()}, const_cast<float*>(m.data()), nullptr)});
  }
  // A matrix FP8 storage quantises (the others are written as f32 by Add).
  void AddQuantizable(const std::string& name, const Matrix& m) {
    if (!fp8_.enabled) {
      Add(name, m);
      return;
    }
    const int64_t rows = m.rows(), cols = m.cols(), br = fp8_.block_rows, bc = fp8_.block_cols;
    const int64_t nr = (rows + br - 1) / br, nc = (cols + bc - 1) / bc;
    Tensor q = Tensor::Zeros(DType::kF8E4M3, {rows, cols});
    Tensor scale = Tensor::Zeros(DType::kF32, {nr, nc});
    uint8_t* qp = q.data<uint8_t>();
#pragma omp parallel for schedule(static)
    for (int64_t b = 0; b < nr * nc; ++b) {
      const int64_t r0 = (b / nc) * br, r1 = std::min(rows, r0 + br), c0 = (b % nc) * bc, c1 = std::min(cols, c0 + bc);
      float amax = 0.0f;
      for (int64_t r = r0; r < r1; ++r) {
        for (int64_t c = c0; c < c1; ++c) amax = std::max(amax, std::fabs(m(r, c)));
      }
      const float s = amax > 0.0f ? amax / 448.0f : 1.0f;
      scale.data<float>()[b] = s;
      for (int64_t r = r0; r < r1; ++r) {
        for (int64_t c = c0; c < c1; ++c) qp[r * cols + c] = encoder_.Encode(m(r, c) / s);
      }
    }
    tensors_.push_back({name, std::move(q)});
    tensors_.push_back({name + "_scale_inv", std::move(scale)});
  }
  void Add(const std::string& name, const Vector& v) {
    tensors_.push_back({name, Tensor::View(DType::kF32, {v.size()}, const_cast<float*>(v.data()), nullptr)});
  }
  void AddMlp(const std::string& prefix, const MlpWeights& m) {
    AddQuantizable(prefix + "gate_proj.weight", m.gate);
    AddQuantizable(prefix + "up_proj.weight", m.up);
    AddQuantizable(prefix + "down_proj.weight", m.down);
  }
  const NamedTensors& tensors() const { return tensors_; }

 private:
  Fp8Storage fp8_;
  E4M3Encoder encoder_;
  NamedTensors tensors_;
};

}  // namespace

Status WriteModelDirectory(const std::string& dir, const nlohmann::json& config_json, const ModelWeights& w,
                           const Fp8Storage& fp8) {
  if (::mkdir(dir.c_str(), 0755) != 0 && errno != EEXIST) return Internal(dir + ": cannot create the directory");
  TensorList t(fp8);
  t.Add("model.embed_tokens.weight", w.embed);
  t.Add("model.norm.weight", w.final_norm);
  if (fp8.lm_head) {
    t.AddQuantizable("lm_head.weight", w.lm_head);
  } else {
    t.Add("lm_head.weight", w.lm_head);
  }
  for (size_t l = 0; l < w.layers.size(); ++l) {
    const LayerWeights& L = w.layers[l];
    if (!L.loaded) return InvalidArgument("layer " + std::to_string(l) + " is not loaded: cannot write it");
    const std::string p = "model.layers." + std::to_string(l) + ".";
    const std::string a = p + "self_attn.";
    t.Add(p + "input_layernorm.weight", L.input_norm);
    t.Add(p + "post_attention_layernorm.weight", L.post_attention_norm);
    t.AddQuantizable(a + "q_a_proj.weight", L.q_a);
    t.Add(a + "q_a_layernorm.weight", L.q_a_norm);
    t.AddQuantizable(a + "q_b_proj.weight", L.q_b);
    t.AddQuantizable(a + "kv_a_proj_with_mqa.weight", L.kv_a);
    t.Add(a + "kv_a_layernorm.weight", L.kv_a_norm);
    t.AddQuantizable(a + "kv_b_proj.weight", L.kv_b);
    t.AddQuantizable(a + "o_proj.weight", L.o);
    if (L.has_indexer) {
      t.AddQuantizable(a + "indexer.wq_b.weight", L.indexer.wq_b);
      t.AddQuantizable(a + "indexer.wk.weight", L.indexer.wk);
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
