#include "model/weights.h"

#include <cstdlib>
#include <set>

#include "core/file_util.h"
#include "kernels/fp8_dequant.h"

namespace indexcache {

namespace {

std::string Where(const SafetensorsCheckpoint& ckpt, const std::string& name) {
  return JoinPath(ckpt.dir(), ckpt.ShardOf(name)) + ": tensor '" + name + "'";
}

Status CheckShape(const SafetensorsCheckpoint& ckpt, const std::string& name, const Tensor& t, const Shape& want) {
  if (t.shape() != want) {
    return InvalidArgument(Where(ckpt, name) + " has shape " + ShapeToString(t.shape()) + ", expected " +
                           ShapeToString(want));
  }
  return Status::Ok();
}

std::string ScaleName(const std::string& name) {
  // "x.weight" -> "x.weight_scale_inv"
  return name + "_scale_inv";
}

}  // namespace

namespace {

// The checked FP8 form of `name` (whose tensor `t` is F8_E4M3): its scale tensor exists, is a
// float type and covers the matrix in blocks of quant.block_rows x quant.block_cols.
StatusOr<Fp8Source> LoadFp8Source(const SafetensorsCheckpoint& ckpt, const std::string& name, const Tensor& t,
                                  const QuantConfig& quant) {
  const std::string scale_name = ScaleName(name);
  if (!ckpt.Has(scale_name)) {
    return NotFound(Where(ckpt, name) + " is F8_E4M3 but '" + scale_name + "' is missing");
  }
  ASSIGN_OR_RETURN(Tensor scale, ckpt.Get(scale_name));
  Fp8Source s;
  s.name = name;
  s.rows = t.size(0);
  s.cols = t.size(1);
  s.block_rows = quant.block_rows;
  s.block_cols = quant.block_cols;
  const Shape want = {(s.rows + s.block_rows - 1) / s.block_rows, (s.cols + s.block_cols - 1) / s.block_cols};
  RETURN_IF_ERROR(CheckShape(ckpt, scale_name, scale, want));
  if (!IsFloating(scale.dtype()) || scale.dtype() == DType::kF8E4M3) {
    return InvalidArgument(Where(ckpt, scale_name) + " has dtype " + DTypeName(scale.dtype()) + ", expected F32");
  }
  s.data = t;
  s.scale_inv = scale.ToFloat32();
  return s;
}

Fp8BlockLayout LayoutOf(const Fp8Source& s) {
  Fp8BlockLayout l;
  l.rows = s.rows;
  l.cols = s.cols;
  l.block_rows = s.block_rows;
  l.block_cols = s.block_cols;
  return l;
}

}  // namespace

StatusOr<Matrix> LoadMatrix(const SafetensorsCheckpoint& ckpt, const std::string& name, int64_t rows, int64_t cols,
                            const QuantConfig& quant) {
  ASSIGN_OR_RETURN(Tensor t, ckpt.Get(name));
  RETURN_IF_ERROR(CheckShape(ckpt, name, t, {rows, cols}));
  Matrix m(rows, cols);
  if (t.dtype() == DType::kF8E4M3) {
    ASSIGN_OR_RETURN(const Fp8Source s, LoadFp8Source(ckpt, name, t, quant));
    Fp8DequantCpu(static_cast<const uint8_t*>(s.data.raw()), s.scale_inv.data<float>(), LayoutOf(s), m.data());
    return m;
  }
  if (!IsFloating(t.dtype())) {
    return InvalidArgument(Where(ckpt, name) + " has dtype " + DTypeName(t.dtype()) + ", expected a float type");
  }
  ConvertToFloat(t.dtype(), t.raw(), m.data(), rows * cols);
  return m;
}

StatusOr<WeightMatrix> LoadWeightMatrix(const SafetensorsCheckpoint& ckpt, const std::string& name, int64_t rows,
                                        int64_t cols, const QuantConfig& quant, Fp8Weights fp8) {
  if (fp8 == Fp8Weights::kKeep) {
    ASSIGN_OR_RETURN(Tensor t, ckpt.Get(name));
    if (t.dtype() == DType::kF8E4M3) {
      RETURN_IF_ERROR(CheckShape(ckpt, name, t, {rows, cols}));
      ASSIGN_OR_RETURN(Fp8Source s, LoadFp8Source(ckpt, name, t, quant));
      return WeightMatrix::FromFp8(std::move(s));
    }
  }
  ASSIGN_OR_RETURN(Matrix m, LoadMatrix(ckpt, name, rows, cols, quant));
  return WeightMatrix(std::move(m));
}

StatusOr<Vector> LoadVector(const SafetensorsCheckpoint& ckpt, const std::string& name, int64_t size) {
  ASSIGN_OR_RETURN(Tensor t, ckpt.Get(name));
  RETURN_IF_ERROR(CheckShape(ckpt, name, t, {size}));
  if (!IsFloating(t.dtype()) || t.dtype() == DType::kF8E4M3) {
    return InvalidArgument(Where(ckpt, name) + " has dtype " + DTypeName(t.dtype()) + ", expected F32/BF16/F16");
  }
  Vector v(size);
  ConvertToFloat(t.dtype(), t.raw(), v.data(), size);
  return v;
}

namespace {

StatusOr<MlpWeights> LoadMlp(const SafetensorsCheckpoint& ckpt, const std::string& prefix, int64_t hidden,
                             int64_t inter, const QuantConfig& q, Fp8Weights fp8) {
  MlpWeights w;
  ASSIGN_OR_RETURN(w.gate, LoadWeightMatrix(ckpt, prefix + "gate_proj.weight", inter, hidden, q, fp8));
  ASSIGN_OR_RETURN(w.up, LoadWeightMatrix(ckpt, prefix + "up_proj.weight", inter, hidden, q, fp8));
  ASSIGN_OR_RETURN(w.down, LoadWeightMatrix(ckpt, prefix + "down_proj.weight", hidden, inter, q, fp8));
  return w;
}

Status LoadExperts(const SafetensorsCheckpoint& ckpt, const std::string& prefix, const ModelConfig& c, Fp8Weights fp8,
                   MoeWeights* moe) {
  const int64_t E = c.n_routed_experts, H = c.hidden_size, I = c.moe_intermediate_size;
  moe->experts.resize(E);
  const std::string fused_gate_up = prefix + "experts.gate_up_proj";
  if (ckpt.Has(fused_gate_up)) {
    // transformers' fused layout: gate_up [E, 2I, H] (gate rows first), down [E, H, I].
    ASSIGN_OR_RETURN(Tensor gu, ckpt.Get(fused_gate_up));
    RETURN_IF_ERROR(CheckShape(ckpt, fused_gate_up, gu, {E, 2 * I, H}));
    const std::string down_name = prefix + "experts.down_proj";
    ASSIGN_OR_RETURN(Tensor dn, ckpt.Get(down_name));
    RETURN_IF_ERROR(CheckShape(ckpt, down_name, dn, {E, H, I}));
    if (!IsFloating(gu.dtype()) || gu.dtype() == DType::kF8E4M3 || !IsFloating(dn.dtype()) || dn.dtype() == DType::kF8E4M3) {
      return InvalidArgument(Where(ckpt, fused_gate_up) + ": fused experts must be F32/BF16/F16");
    }
    const Tensor guf = gu.ToFloat32(), dnf = dn.ToFloat32();
    for (int64_t e = 0; e < E; ++e) {
      const float* g = guf.data<float>() + e * 2 * I * H;
      moe->experts[e].gate = Eigen::Map<const Matrix>(g, I, H);
      moe->experts[e].up = Eigen::Map<const Matrix>(g + I * H, I, H);
      moe->experts[e].down = Eigen::Map<const Matrix>(dnf.data<float>() + e * H * I, H, I);
    }
    return Status::Ok();
  }
  for (int64_t e = 0; e < E; ++e) {
    ASSIGN_OR_RETURN(moe->experts[e],
                     LoadMlp(ckpt, prefix + "experts." + std::to_string(e) + ".", H, I, c.quant, fp8));
  }
  return Status::Ok();
}

// Whether a checkpoint tensor belongs to the loaded range: "model.layers.N." by N, the rest
// (embedding, final norm, head) to the first and last stages.
bool TensorInRange(const std::string& name, const LayerRange& range, int64_t num_layers) {
  const std::string prefix = "model.layers.";
  if (name.compare(0, prefix.size(), prefix) != 0) return range.begin == 0 || range.end == num_layers;
  const long layer = std::strtol(name.c_str() + prefix.size(), nullptr, 10);
  return layer >= range.begin && layer < range.end;
}

}  // namespace

StatusOr<LayerRange> ResolveLayerRange(LayerRange range, int64_t num_layers) {
  if (range.end < 0) range.end = static_cast<int>(num_layers);
  if (range.begin < 0 || range.begin >= range.end || range.end > num_layers) {
    return InvalidArgument("layer range [" + std::to_string(range.begin) + ", " + std::to_string(range.end) +
                           ") does not fit a model of " + std::to_string(num_layers) + " layers");
  }
  return range;
}

StatusOr<ModelWeights> LoadModelWeights(const ModelConfig& c, const SafetensorsCheckpoint& ckpt,
                                        const std::vector<bool>& indexer_layers, LayerRange range, Fp8Weights fp8) {
  ModelWeights w;
  ASSIGN_OR_RETURN(w.range, ResolveLayerRange(range, c.num_layers));
  const QuantConfig& q = c.quant;
  const int64_t H = c.hidden_size;
  if (w.has_embedding()) {
    ASSIGN_OR_RETURN(w.embed, LoadMatrix(ckpt, "model.embed_tokens.weight", c.vocab_size, H, q));
  }
  if (w.has_head(c.num_layers)) {
    ASSIGN_OR_RETURN(w.final_norm, LoadVector(ckpt, "model.norm.weight", H));
    const bool tied = c.tie_word_embeddings && !ckpt.Has("lm_head.weight");
    if (tied && w.has_embedding()) {
      w.lm_head = w.embed;
    } else {
      ASSIGN_OR_RETURN(w.lm_head, LoadWeightMatrix(ckpt, tied ? "model.embed_tokens.weight" : "lm_head.weight",
                                                   c.vocab_size, H, q, fp8));
    }
  }
  w.layers.resize(c.num_layers);
  for (int64_t l = 0; l < c.num_layers; ++l) {
    LayerWeights& L = w.layers[l];
    L.loaded = l >= w.range.begin && l < w.range.end;
    if (!L.loaded) {
      L.has_indexer = indexer_layers[l];
      L.is_moe = c.layer_is_moe[l];
      continue;
    }
    const std::string p = "model.layers." + std::to_string(l) + ".";
    const std::string a = p + "self_attn.";
    ASSIGN_OR_RETURN(L.input_norm, LoadVector(ckpt, p + "input_layernorm.weight", H));
    ASSIGN_OR_RETURN(L.post_attention_norm, LoadVector(ckpt, p + "post_attention_layernorm.weight", H));
    ASSIGN_OR_RETURN(L.q_a, LoadWeightMatrix(ckpt, a + "q_a_proj.weight", c.q_lora_rank, H, q, fp8));
    ASSIGN_OR_RETURN(L.q_a_norm, LoadVector(ckpt, a + "q_a_layernorm.weight", c.q_lora_rank));
    ASSIGN_OR_RETURN(L.q_b, LoadWeightMatrix(ckpt, a + "q_b_proj.weight", c.num_heads * c.qk_head_dim(),
                                             c.q_lora_rank, q, fp8));
    ASSIGN_OR_RETURN(L.kv_a, LoadWeightMatrix(ckpt, a + "kv_a_proj_with_mqa.weight", c.latent_dim(), H, q, fp8));
    ASSIGN_OR_RETURN(L.kv_a_norm, LoadVector(ckpt, a + "kv_a_layernorm.weight", c.kv_lora_rank));
    ASSIGN_OR_RETURN(L.kv_b, LoadWeightMatrix(ckpt, a + "kv_b_proj.weight",
                                              c.num_heads * (c.qk_nope_head_dim + c.v_head_dim), c.kv_lora_rank, q,
                                              fp8));
    ASSIGN_OR_RETURN(L.o, LoadWeightMatrix(ckpt, a + "o_proj.weight", H, c.num_heads * c.v_head_dim, q, fp8));
    L.has_indexer = indexer_layers[l];
    if (L.has_indexer) {
      const std::string ix = a + "indexer.";
      IndexerWeights& I = L.indexer;
      ASSIGN_OR_RETURN(I.wq_b, LoadMatrix(ckpt, ix + "wq_b.weight", c.index_n_heads * c.index_head_dim, c.q_lora_rank, q));
      ASSIGN_OR_RETURN(I.wk, LoadMatrix(ckpt, ix + "wk.weight", c.index_head_dim, H, q));
      ASSIGN_OR_RETURN(I.k_norm_weight, LoadVector(ckpt, ix + "k_norm.weight", c.index_head_dim));
      ASSIGN_OR_RETURN(I.k_norm_bias, LoadVector(ckpt, ix + "k_norm.bias", c.index_head_dim));
      ASSIGN_OR_RETURN(I.weights_proj, LoadMatrix(ckpt, ix + "weights_proj.weight", c.index_n_heads, H, q));
    }
    L.is_moe = c.layer_is_moe[l];
    const std::string m = p + "mlp.";
    if (!L.is_moe) {
      ASSIGN_OR_RETURN(L.mlp, LoadMlp(ckpt, m, H, c.intermediate_size, q, fp8));
      continue;
    }
    ASSIGN_OR_RETURN(L.moe.router, LoadMatrix(ckpt, m + "gate.weight", c.n_routed_experts, H, q));
    if (ckpt.Has(m + "gate.e_score_correction_bias")) {
      ASSIGN_OR_RETURN(L.moe.score_bias, LoadVector(ckpt, m + "gate.e_score_correction_bias", c.n_routed_experts));
    } else {
      L.moe.score_bias = Vector::Zero(c.n_routed_experts);
    }
    RETURN_IF_ERROR(LoadExperts(ckpt, m, c, fp8, &L.moe));
    L.moe.has_shared = c.n_shared_experts > 0;
    if (L.moe.has_shared) {
      ASSIGN_OR_RETURN(L.moe.shared, LoadMlp(ckpt, m + "shared_experts.", H,
                                             c.moe_intermediate_size * c.n_shared_experts, q, fp8));
    }
  }
  std::set<std::string> dtypes;
  for (const std::string& name : ckpt.names()) {
    if (!TensorInRange(name, w.range, c.num_layers)) continue;
    auto t = ckpt.Get(name);
    if (t.ok()) dtypes.insert(DTypeName(t->dtype()));
  }
  w.source_dtypes.assign(dtypes.begin(), dtypes.end());
  return w;
}

void ReleaseFp8Sources(ModelWeights* w) {
  auto release = [](WeightMatrix& m) {
    if (!m.fp8) return;
    m.fp8->data = Tensor();
    m.fp8->scale_inv = Tensor();
  };
  auto release_mlp = [&](MlpWeights& m) {
    release(m.gate);
    release(m.up);
    release(m.down);
  };
  release(w->lm_head);
  for (LayerWeights& L : w->layers) {
    for (WeightMatrix* m : {&L.q_a, &L.q_b, &L.kv_a, &L.kv_b, &L.o}) release(*m);
    release_mlp(L.mlp);
    for (MlpWeights& e : L.moe.experts) release_mlp(e);
    release_mlp(L.moe.shared);
  }
}

}  // namespace indexcache
