#include "model/dsa_model.h"

#include <cmath>
#include <cstring>

#include "core/file_util.h"
#include "kernels/indexer_topk.h"
#include "kernels/moe_routing.h"
#include "kernels/norms.h"
#include "kernels/rope.h"
#include "kernels/sparse_mla.h"

namespace indexcache {

namespace {

Matrix RmsNorm(const Matrix& x, const Vector& w, float eps) {
  Matrix y(x.rows(), x.cols());
  RmsNormCpu(x.data(), w.data(), x.rows(), x.cols(), eps, y.data());
  return y;
}

Tensor ToTensor(const Matrix& m, Shape shape) {
  Tensor t = Tensor::Zeros(DType::kF32, std::move(shape));
  IC_CHECK(t.numel() == m.size());
  std::memcpy(t.raw(), m.data(), m.size() * sizeof(float));
  return t;
}

Tensor CopyTensor(const Tensor& src) {
  Tensor t = Tensor::Zeros(src.dtype(), src.shape());
  std::memcpy(t.raw(), src.raw(), src.nbytes());
  return t;
}

Matrix Silu(const Matrix& x) { return x.array() / (1.0f + (-x.array()).exp()); }

Matrix Mlp(const MlpWeights& w, const Matrix& x) {
  const Matrix gate = x * w.gate.transpose();
  const Matrix up = x * w.up.transpose();
  const Matrix act = Silu(gate).cwiseProduct(up);
  return act * w.down.transpose();
}

Matrix Moe(const ModelConfig& c, const MoeWeights& w, const Matrix& x) {
  const int64_t T = x.rows(), K = c.num_experts_per_tok;
  const Matrix logits = x * w.router.transpose();  // [T, E]
  std::vector<int32_t> experts(T * K);
  std::vector<float> weights(T * K);
  MoeRoutingParams rp;
  rp.logits = logits.data();
  rp.bias = w.score_bias.data();
  rp.T = T;
  rp.E = c.n_routed_experts;
  rp.n_group = c.n_group;
  rp.topk_group = c.topk_group;
  rp.topk = K;
  rp.norm_topk_prob = c.norm_topk_prob;
  rp.routed_scaling_factor = static_cast<float>(c.routed_scaling_factor);
  rp.out_experts = experts.data();
  rp.out_weights = weights.data();
  MoeRoutingCpu(rp);

  // Group tokens by expert so each expert runs one GEMM over its tokens.
  std::vector<std::vector<std::pair<int64_t, float>>> assigned(c.n_routed_experts);
  for (int64_t t = 0; t < T; ++t) {
    for (int64_t j = 0; j < K; ++j) assigned[experts[t * K + j]].push_back({t, weights[t * K + j]});
  }
  Matrix out = Matrix::Zero(T, x.cols());
  for (int64_t e = 0; e < c.n_routed_experts; ++e) {
    const auto& rows = assigned[e];
    if (rows.empty()) continue;
    Matrix xe(static_cast<int64_t>(rows.size()), x.cols());
    for (size_t i = 0; i < rows.size(); ++i) xe.row(i) = x.row(rows[i].first);
    const Matrix ye = Mlp(w.experts[e], xe);
    for (size_t i = 0; i < rows.size(); ++i) out.row(rows[i].first) += rows[i].second * ye.row(i);
  }
  if (w.has_shared) out += Mlp(w.shared, x);
  return out;
}

Status CheckTopk(const Tensor& t, int64_t T, const std::string& what) {
  if (t.dtype() != DType::kI32 || t.dim() != 2 || t.size(0) != T || t.size(1) < 1) {
    return InvalidArgument(what + ": expected int32 [" + std::to_string(T) + ", k], got " +
                           DTypeName(t.dtype()) + " " + ShapeToString(t.shape()));
  }
  return Status::Ok();
}

}  // namespace

StatusOr<DsaModel> DsaModel::Load(const std::string& model_dir, const std::optional<std::string>& pattern_spec) {
  ASSIGN_OR_RETURN(ModelConfig config, LoadModelConfig(model_dir));
  IndexPattern pattern = config.pattern;
  if (pattern_spec) {
    ASSIGN_OR_RETURN(pattern, IndexPattern::Parse(*pattern_spec, static_cast<int>(config.num_layers)));
  }
  ASSIGN_OR_RETURN(SafetensorsCheckpoint ckpt, SafetensorsCheckpoint::Open(model_dir));
  std::vector<bool> indexer_layers(config.num_layers);
  for (int l = 0; l < config.num_layers; ++l) {
    const std::string probe = "model.layers." + std::to_string(l) + ".self_attn.indexer.wk.weight";
    // Full layers need their indexer (a missing tensor is an error naming it); Shared layers load
    // theirs if present, so a later pattern may make them Full again.
    indexer_layers[l] = pattern.is_full(l) || ckpt.Has(probe);
  }
  ASSIGN_OR_RETURN(ModelWeights weights, LoadModelWeights(config, ckpt, indexer_layers));
  return FromParts(std::move(config), std::move(weights), std::move(pattern));
}

StatusOr<DsaModel> DsaModel::FromParts(ModelConfig config, ModelWeights weights, IndexPattern pattern) {
  DsaModel m;
  m.config_ = std::move(config);
  m.weights_ = std::move(weights);
  RETURN_IF_ERROR(m.SetPattern(std::move(pattern)));
  return m;
}

Status DsaModel::CheckPattern(const IndexPattern& pattern) const {
  if (pattern.num_layers() != config_.num_layers) {
    return InvalidArgument("pattern has " + std::to_string(pattern.num_layers()) + " layers, model has " +
                           std::to_string(config_.num_layers));
  }
  for (int l = 0; l < pattern.num_layers(); ++l) {
    if (pattern.is_full(l) && !weights_.layers[l].has_indexer) {
      return InvalidArgument("pattern makes layer " + std::to_string(l) +
                             " Full but the checkpoint has no indexer weights for it");
    }
  }
  return Status::Ok();
}

Status DsaModel::SetPattern(IndexPattern pattern) {
  RETURN_IF_ERROR(CheckPattern(pattern));
  pattern_ = std::move(pattern);
  return Status::Ok();
}

int64_t DsaModel::ParameterCount() const {
  int64_t n = weights_.embed.size() + weights_.final_norm.size();
  if (!config_.tie_word_embeddings) n += weights_.lm_head.size();
  auto mlp = [](const MlpWeights& m) { return m.gate.size() + m.up.size() + m.down.size(); };
  for (const LayerWeights& L : weights_.layers) {
    n += L.input_norm.size() + L.post_attention_norm.size() + L.q_a.size() + L.q_a_norm.size() + L.q_b.size() +
         L.kv_a.size() + L.kv_a_norm.size() + L.kv_b.size() + L.o.size();
    if (L.has_indexer) {
      n += L.indexer.wq_b.size() + L.indexer.wk.size() + L.indexer.k_norm_weight.size() +
           L.indexer.k_norm_bias.size() + L.indexer.weights_proj.size();
    }
    if (!L.is_moe) {
      n += mlp(L.mlp);
    } else {
      n += L.moe.router.size() + L.moe.score_bias.size();
      for (const MlpWeights& e : L.moe.experts) n += mlp(e);
      if (L.moe.has_shared) n += mlp(L.moe.shared);
    }
  }
  return n;
}

StatusOr<ForwardResult> DsaModel::Forward(const std::vector<int32_t>& tokens, const ForwardOptions& opt) const {
  const ModelConfig& c = config_;
  const IndexPattern& pattern = opt.pattern ? *opt.pattern : pattern_;
  if (opt.pattern) RETURN_IF_ERROR(CheckPattern(pattern));
  const int64_t T = static_cast<int64_t>(tokens.size());
  const int num_layers = static_cast<int>(c.num_layers);
  const int start = opt.start_layer, end = opt.end_layer < 0 ? num_layers : opt.end_layer;
  if (T == 0) return InvalidArgument("empty token sequence");
  if (start < 0 || start > end || end > num_layers) {
    return InvalidArgument("layer range [" + std::to_string(start) + ", " + std::to_string(end) + ") is invalid");
  }
  const int64_t Hd = c.hidden_size, NH = c.num_heads, nope = c.qk_nope_head_dim, rope = c.qk_rope_head_dim;
  const int64_t vdim = c.v_head_dim, kvr = c.kv_lora_rank, dqk = c.latent_dim(), qk = c.qk_head_dim();
  const float eps = static_cast<float>(c.rms_norm_eps);

  ForwardResult result;
  result.layers.resize(num_layers);
  Matrix h;
  if (start == 0) {
    h.resize(T, Hd);
    for (int64_t t = 0; t < T; ++t) {
      if (tokens[t] < 0 || tokens[t] >= c.vocab_size) {
        return InvalidArgument("token id " + std::to_string(tokens[t]) + " at position " + std::to_string(t) +
                               " is outside the vocabulary [0, " + std::to_string(c.vocab_size) + ")");
      }
      h.row(t) = weights_.embed.row(tokens[t]);
    }
  } else {
    if (opt.hidden_in.dtype() != DType::kF32 || opt.hidden_in.shape() != Shape{T, Hd}) {
      return InvalidArgument("hidden_in must be f32 [" + std::to_string(T) + ", " + std::to_string(Hd) + "]");
    }
    h = Eigen::Map<const Matrix>(opt.hidden_in.data<float>(), T, Hd);
  }
  Tensor topk_buffer;
  if (!opt.initial_topk.empty()) {
    RETURN_IF_ERROR(CheckTopk(opt.initial_topk, T, "initial_topk"));
    topk_buffer = opt.initial_topk;
  }

  const RopeTable rope_table = BuildRopeTable(c.rope, rope, 0, T);
  const float attn_scale = static_cast<float>(c.softmax_scale());

  for (int l = start; l < end; ++l) {
    const LayerWeights& W = weights_.layers[l];
    const bool traced = opt.trace.any() && (opt.trace_layers.empty() || opt.trace_layers[l]);
    LayerTrace* trace = traced ? &result.layers[l] : nullptr;
    if (trace && opt.trace.hidden_in) trace->hidden_in = ToTensor(h, {T, Hd});

    // --- MLA projections -------------------------------------------------------------------
    const Matrix x = RmsNorm(h, W.input_norm, eps);
    const Matrix q_lat = RmsNorm(x * W.q_a.transpose(), W.q_a_norm, eps);  // [T, q_lora]
    Matrix q = q_lat * W.q_b.transpose();                                  // [T, NH * qk]
    const Matrix ckv = x * W.kv_a.transpose();                              // [T, kvr + rope]
    Matrix latent(T, dqk);                                                  // [T, dqk]
    RmsNormCpu(ckv.data(), W.kv_a_norm.data(), T, kvr, eps, latent.data(), dqk, dqk);
    latent.rightCols(rope) = ckv.rightCols(rope);
    ApplyRopeInterleavedCpu(rope_table, latent.data() + kvr, T, 1, dqk, 0);
    ApplyRopeInterleavedCpu(rope_table, q.data() + nope, T, NH, NH * qk, qk);
    // Absorb kv_b's key part into the queries: q_abs[t, h] = [q_nope W_uk[h], q_rope].
    Matrix q_abs(T, NH * dqk);
    for (int64_t hh = 0; hh < NH; ++hh) {
      q_abs.block(0, hh * dqk, T, kvr) = q.block(0, hh * qk, T, nope) * W.kv_b.block(hh * (nope + vdim), 0, nope, kvr);
      q_abs.block(0, hh * dqk + kvr, T, rope) = q.block(0, hh * qk + nope, T, rope);
    }
    if (trace && opt.trace.indexer_inputs) {
      trace->indexer_x = ToTensor(x, {T, Hd});
      trace->q_latent = ToTensor(q_lat, {T, c.q_lora_rank});
    }

    // --- Top-k: injected, own indexer (Full) or the nearest Full layer's (Shared) -------------
    if (l < static_cast<int>(opt.inject_topk.size()) && !opt.inject_topk[l].empty()) {
      RETURN_IF_ERROR(CheckTopk(opt.inject_topk[l], T, "inject_topk[" + std::to_string(l) + "]"));
      if (pattern.is_full(l) || topk_buffer.empty()) topk_buffer = opt.inject_topk[l];
    } else if (pattern.is_full(l)) {
      const IndexerWeights& I = W.indexer;
      const int64_t IH = c.index_n_heads, ID = c.index_head_dim;
      Matrix iq = q_lat * I.wq_b.transpose();  // [T, IH * ID]
      Matrix ik_raw = x * I.wk.transpose();    // [T, ID]
      Matrix ik(T, ID);
      LayerNormCpu(ik_raw.data(), I.k_norm_weight.data(), I.k_norm_bias.data(), T, ID, 1e-6f, ik.data());
      const RopeTable index_rope = rope_table;
      if (c.indexer_rope_interleave) {
        ApplyRopeInterleavedCpu(index_rope, iq.data(), T, IH, IH * ID, ID);
        ApplyRopeInterleavedCpu(index_rope, ik.data(), T, 1, ID, 0);
      } else {
        ApplyRopeHalfSplitCpu(index_rope, iq.data(), T, IH, IH * ID, ID);
        ApplyRopeHalfSplitCpu(index_rope, ik.data(), T, 1, ID, 0);
      }
      const Matrix iw = (x * I.weights_proj.transpose()) * static_cast<float>(1.0 / std::sqrt(double(IH)));
      topk_buffer = Tensor::Zeros(DType::kI32, {T, c.index_topk});
      IndexerTopkParams p;
      p.q = iq.data();
      p.k = ik.data();
      p.weights = iw.data();
      p.T = T;
      p.L = T;
      p.H = IH;
      p.D = ID;
      p.topk = c.index_topk;
      p.scale = static_cast<float>(1.0 / std::sqrt(double(ID)));
      p.out_indices = topk_buffer.data<int32_t>();
      IndexerTopkCpu(p);
    } else if (topk_buffer.empty()) {
      return InvalidArgument("layer " + std::to_string(l) + " is Shared but no Full layer ran before it "
                             "(pass initial_topk when starting at a Shared layer)");
    }
    const Tensor& topk = (l < static_cast<int>(opt.inject_topk.size()) && !opt.inject_topk[l].empty())
                             ? opt.inject_topk[l] : topk_buffer;
    if (trace && opt.trace.topk) trace->topk = CopyTensor(topk);

    // --- Sparse MLA over the selected latents ----------------------------------------------
    Matrix out_lat(T, NH * kvr);
    Matrix lse(T, NH);
    SparseMlaParams sp;
    sp.q = q_abs.data();
    sp.kv = latent.data();
    sp.indices = topk.data<int32_t>();
    sp.T = T;
    sp.H = NH;
    sp.d_qk = dqk;
    sp.d_v = kvr;
    sp.L = T;
    sp.topk = topk.size(1);
    sp.scale = attn_scale;
    sp.out = out_lat.data();
    sp.lse = lse.data();
    SparseMlaCpu(sp);
    if (trace && opt.trace.attention) {
      trace->attn_q = ToTensor(q_abs, {T, NH, dqk});
      trace->attn_kv = ToTensor(latent, {T, dqk});
      trace->attn_lse = ToTensor(lse, {T, NH});
      trace->attn_scale = attn_scale;
    }
    // Values: out[t, h] = out_lat[t, h] W_uv[h]^T, then o_proj.
    Matrix attn(T, NH * vdim);
    for (int64_t hh = 0; hh < NH; ++hh) {
      attn.block(0, hh * vdim, T, vdim) =
          out_lat.block(0, hh * kvr, T, kvr) * W.kv_b.block(hh * (nope + vdim) + nope, 0, vdim, kvr).transpose();
    }
    h += attn * W.o.transpose();

    // --- MLP / MoE ----------------------------------------------------------------------------
    const Matrix x2 = RmsNorm(h, W.post_attention_norm, eps);
    h += W.is_moe ? Moe(c, W.moe, x2) : Mlp(W.mlp, x2);
  }

  result.hidden_out = ToTensor(h, {T, Hd});
  result.topk = topk_buffer;
  if (end == num_layers && opt.compute_logits) {
    const Matrix hn = RmsNorm(h, weights_.final_norm, eps);
    const Matrix logits = hn * weights_.lm_head.transpose();
    result.logits = ToTensor(logits, {T, c.vocab_size});
  }
  return result;
}

}  // namespace indexcache
