#include "model/dsa_model.h"

#include <algorithm>
#include <cmath>
#include <cstring>

#include "core/file_util.h"
#include "kernels/rope.h"
#include "model/moe_block.h"

namespace indexcache {

namespace {

Status CheckTopk(const Tensor& t, int64_t T, const std::string& what) {
  if (t.dtype() != DType::kI32 || t.dim() != 2 || t.size(0) != T || t.size(1) < 1) {
    return InvalidArgument(what + ": expected int32 [" + std::to_string(T) + ", k], got " +
                           DTypeName(t.dtype()) + " " + ShapeToString(t.shape()));
  }
  return Status::Ok();
}

// Mlp() and Moe() live in model/moe_block.cc.

}  // namespace

StatusOr<std::shared_ptr<Backend>> MakeBackend(const std::string& device) {
  if (device == "cpu") return std::shared_ptr<Backend>(MakeCpuBackend());
  if (device == "cuda") return MakeCudaBackendOrError();
  return InvalidArgument("--device must be cpu or cuda, got '" + device + "'");
}

StatusOr<DsaModel> DsaModel::Load(const std::string& model_dir, const std::optional<std::string>& pattern_spec,
                                  const std::string& device, const std::string& pattern_source, LayerRange layers) {
  ASSIGN_OR_RETURN(std::shared_ptr<Backend> backend, MakeBackend(device));
  ASSIGN_OR_RETURN(ModelConfig config, LoadModelConfig(model_dir));
  // Before any weight is read: a model the backend's kernels cannot run is one error line.
  RETURN_IF_ERROR(backend->SupportsModel(config).WithContext(config.source));
  IndexPattern pattern = config.pattern;
  if (pattern_spec) {
    ASSIGN_OR_RETURN(pattern, IndexPattern::Parse(*pattern_spec, static_cast<int>(config.num_layers), pattern_source));
  }
  ASSIGN_OR_RETURN(SafetensorsCheckpoint ckpt, SafetensorsCheckpoint::Open(model_dir));
  std::vector<bool> indexer_layers(config.num_layers);
  for (int l = 0; l < config.num_layers; ++l) {
    const std::string probe = "model.layers." + std::to_string(l) + ".self_attn.indexer.wk.weight";
    // Full layers need their indexer (a missing tensor is an error naming it); Shared layers load
    // theirs if present, so a later pattern may make them Full again.
    indexer_layers[l] = pattern.is_full(l) || ckpt.Has(probe);
  }
  // A backend that keeps FP8 resident (CUDA) gets the FP8 matrices as the checkpoint stores them,
  // placed tensor by tensor from the shard mapping: no fp32 copy of them exists on the host.
  const Fp8Weights fp8 = backend->KeepsFp8Weights() ? Fp8Weights::kKeep : Fp8Weights::kDequantize;
  ASSIGN_OR_RETURN(ModelWeights weights, LoadModelWeights(config, ckpt, indexer_layers, layers, fp8));
  return FromParts(std::move(config), std::move(weights), std::move(pattern), std::move(backend));
}

StatusOr<DsaModel> DsaModel::FromParts(ModelConfig config, ModelWeights weights, IndexPattern pattern,
                                       std::shared_ptr<Backend> backend) {
  RETURN_IF_ERROR(backend->SupportsModel(config).WithContext(config.source));
  DsaModel m;
  if (weights.range.end < 0) weights.range.end = static_cast<int>(config.num_layers);  // built in memory: all layers
  m.config_ = std::move(config);
  m.weights_ = std::make_shared<ModelWeights>(std::move(weights));
  m.backend_ = std::move(backend);
  ASSIGN_OR_RETURN(m.placed_, PlaceWeights(*m.weights_, m.backend_.get()));
  // The backend holds its own copies now; dropping the views lets the shard mappings go.
  ReleaseFp8Sources(m.weights_.get());
  RETURN_IF_ERROR(m.SetPattern(std::move(pattern)));
  return m;
}

Status DsaModel::CheckPattern(const IndexPattern& pattern) const {
  if (pattern.num_layers() != config_.num_layers) {
    return InvalidArgument("pattern has " + std::to_string(pattern.num_layers()) + " layers, model has " +
                           std::to_string(config_.num_layers));
  }
  for (int l = 0; l < pattern.num_layers(); ++l) {
    if (pattern.is_full(l) && !weights_->layers[l].has_indexer) {
      return InvalidArgument("pattern makes layer " + std::to_string(l) +
                             " Full but the checkpoint has no indexer weights for it");
    }
  }
  return Status::Ok();
}

Status DsaModel::SetIndexer(int layer, const IndexerWeights& w) {
  if (layer < 0 || layer >= config_.num_layers) return InvalidArgument("no layer " + std::to_string(layer));
  const ModelConfig& c = config_;
  if (w.wq_b.rows() != c.index_n_heads * c.index_head_dim || w.wq_b.cols() != c.q_lora_rank ||
      w.wk.rows() != c.index_head_dim || w.wk.cols() != c.hidden_size || w.k_norm_weight.size() != c.index_head_dim ||
      w.k_norm_bias.size() != c.index_head_dim || w.weights_proj.rows() != c.index_n_heads ||
      w.weights_proj.cols() != c.hidden_size) {
    return InvalidArgument("indexer weights for layer " + std::to_string(layer) + " have the wrong shapes");
  }
  LayerWeights& L = weights_->layers[layer];
  if (!L.loaded) return InvalidArgument("layer " + std::to_string(layer) + " belongs to another pipeline stage");
  L.indexer = w;
  L.has_indexer = true;
  PlaceIndexer(L.indexer, backend_.get(), &placed_.layers[layer].indexer);
  placed_.layers[layer].has_indexer = true;
  return Status::Ok();
}

Status DsaModel::SetIndexerOnBackend(int layer, const BackendIndexer& f32) {
  if (layer < 0 || layer >= config_.num_layers) return InvalidArgument("no layer " + std::to_string(layer));
  if (!weights_->layers[layer].loaded || !placed_.layers[layer].has_indexer) {
    return InvalidArgument("layer " + std::to_string(layer) + " has no placed indexer on this stage");
  }
  BackendIndexer& placed = placed_.layers[layer].indexer;
  const std::pair<Tensor*, const Tensor*> fields[] = {{&placed.wq_b, &f32.wq_b},
                                                      {&placed.wk, &f32.wk},
                                                      {&placed.k_norm_weight, &f32.k_norm_weight},
                                                      {&placed.k_norm_bias, &f32.k_norm_bias},
                                                      {&placed.weights_proj, &f32.weights_proj}};
  for (const auto& [dst, src] : fields) {
    if (src->dtype() != DType::kF32 || src->shape() != dst->shape()) {
      return InvalidArgument("indexer weights for layer " + std::to_string(layer) + " have the wrong shapes");
    }
  }
  for (const auto& [dst, src] : fields) *dst = backend_->Convert(*src, dst->dtype());
  return Status::Ok();
}

Status DsaModel::NonFiniteError(int32_t tag) const {
  const std::string where = config_.source.empty() ? std::string("model") : DirName(config_.source);
  if (tag >= config_.num_layers) {
    return InvalidArgument(where + ": the logits hold NaN or Inf although every layer's output was finite "
                           "(check model.norm.weight and lm_head.weight)");
  }
  const std::string layer = std::to_string(tag);
  return InvalidArgument(where + ": layer " + layer + " (model.layers." + layer +
                         ".*) produced NaN or Inf; its weights or the layers before it hold non-finite values");
}

Status DsaModel::SetPattern(IndexPattern pattern) {
  RETURN_IF_ERROR(CheckPattern(pattern));
  pattern_ = std::move(pattern);
  return Status::Ok();
}

ResidentWeightBytes DsaModel::ResidentBytes() const { return CountResidentBytes(placed_, *backend_); }

int64_t DsaModel::ParameterCount() const {
  int64_t n = weights_->embed.size() + weights_->final_norm.size();
  if (!config_.tie_word_embeddings) n += weights_->lm_head.num_params();
  auto mlp = [](const MlpWeights& m) { return m.gate.num_params() + m.up.num_params() + m.down.num_params(); };
  for (const LayerWeights& L : weights_->layers) {
    n += L.input_norm.size() + L.post_attention_norm.size() + L.q_a.num_params() + L.q_a_norm.size() +
         L.q_b.num_params() + L.kv_a.num_params() + L.kv_a_norm.size() + L.kv_b.num_params() + L.o.num_params();
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

StatusOr<KvCache> DsaModel::NewCache(int64_t capacity, const IndexPattern* pattern) const {
  if (capacity < 1) return InvalidArgument("cache capacity must be positive");
  KvCache cache;
  cache.capacity = capacity;
  cache.pattern = pattern ? *pattern : pattern_;
  RETURN_IF_ERROR(CheckPattern(cache.pattern));
  const DType adt = backend_->activation_dtype();
  for (int l = 0; l < config_.num_layers; ++l) {
    cache.latent.push_back(backend_->Alloc(adt, {capacity, config_.latent_dim()}));
    cache.index_keys.push_back(cache.pattern.is_full(l) ? backend_->Alloc(adt, {capacity, config_.index_head_dim})
                                                        : Tensor());
  }
  return cache;
}

StatusOr<std::vector<double>> DsaModel::NextTokenNll(const Tensor& h, const std::vector<int32_t>& tokens) const {
  Backend& be = *backend_;
  const int64_t T = h.size(0), Hd = h.size(1), V = config_.vocab_size;
  std::vector<double> nll;
  nll.reserve(T > 0 ? T - 1 : 0);
  // Rows per chunk: about 2^28 logits (1 GiB of f32) at a time, whatever the vocabulary.
  const int64_t chunk = std::max<int64_t>(1, (int64_t{1} << 28) / V);
  for (int64_t r0 = 0; r0 + 1 < T; r0 += chunk) {
    const int64_t r1 = std::min(T - 1, r0 + chunk), rows = r1 - r0;
    Tensor hn = be.Alloc(be.activation_dtype(), {rows, Hd});
    be.RmsNorm(h.Slice0(r0, r1), placed_.final_norm, static_cast<float>(config_.rms_norm_eps), &hn);
    Tensor logits = be.Alloc(DType::kF32, {rows, V});
    be.Linear(hn, placed_.lm_head, &logits);
    const std::vector<int32_t> targets(tokens.begin() + r0 + 1, tokens.begin() + r1 + 1);
    const std::vector<double> part = be.CrossEntropyRows(logits, targets);
    for (int64_t i = 0; i < rows; ++i) {
      if (!std::isfinite(part[i])) {
        // Every layer's output was checked finite before the loss: the final norm or lm_head.
        const std::string where = config_.source.empty() ? std::string("model") : DirName(config_.source);
        return InvalidArgument(where + ": the logits at position " + std::to_string(r0 + i) +
                               " hold NaN or Inf although every layer's output was finite (check "
                               "model.norm.weight and lm_head.weight)");
      }
    }
    nll.insert(nll.end(), part.begin(), part.end());
  }
  return nll;
}

void DsaModel::AbsorbQueries(const BackendLayer& W, const Tensor& q_lat, const RopeTable& rope, Tensor* q_abs) const {
  const ModelConfig& c = config_;
  Backend& be = *backend_;
  const int64_t rows = q_lat.size(0), NH = c.num_heads;
  Tensor q = be.Alloc(be.activation_dtype(), {rows, NH * c.qk_head_dim()});
  be.Linear(q_lat, W.q_b, &q);
  be.Rope(rope, /*interleaved=*/true, NH, c.qk_head_dim(), c.qk_nope_head_dim, &q);
  // Absorb kv_b's key part into the queries: every head then attends over the shared latents.
  be.AbsorbQuery(q, W.kv_b, Dims(), q_abs);
}

Status DsaModel::AbsorbedQueries(int layer, const Tensor& q_latent, int64_t first_position, Tensor* q_abs) const {
  const ModelConfig& c = config_;
  const LayerRange& held = weights_->range;
  if (layer < held.begin || layer >= held.end) {
    return InvalidArgument("layer " + std::to_string(layer) + " is not held by this model (pipeline stage)");
  }
  const int64_t rows = q_latent.dim() == 2 ? q_latent.size(0) : -1;
  if (rows < 1 || q_latent.size(1) != c.q_lora_rank || q_abs->shape() != Shape{rows, c.num_heads, c.latent_dim()}) {
    return InvalidArgument("AbsorbedQueries: q_latent must be [rows, " + std::to_string(c.q_lora_rank) +
                           "] and q_abs [rows, " + std::to_string(c.num_heads) + ", " +
                           std::to_string(c.latent_dim()) + "]");
  }
  const RopeTable rope = BuildRopeTable(c.rope, c.qk_rope_head_dim, first_position, rows);
  AbsorbQueries(placed_.layers[layer], q_latent, rope, q_abs);
  return Status::Ok();
}

MlaDims DsaModel::Dims() const {
  MlaDims d;
  d.heads = config_.num_heads;
  d.nope = config_.qk_nope_head_dim;
  d.rope = config_.qk_rope_head_dim;
  d.v = config_.v_head_dim;
  d.kv_lora = config_.kv_lora_rank;
  return d;
}

StatusOr<ForwardResult> DsaModel::Forward(const std::vector<int32_t>& tokens, const ForwardOptions& opt) const {
  const ModelConfig& c = config_;
  Backend& be = *backend_;
  const DType adt = be.activation_dtype();
  KvCache* cache = opt.cache;
  const IndexPattern& pattern = cache ? cache->pattern : opt.pattern ? *opt.pattern : pattern_;
  if (opt.pattern && !cache) RETURN_IF_ERROR(CheckPattern(pattern));
  const int64_t T = static_cast<int64_t>(tokens.size());
  const int num_layers = static_cast<int>(c.num_layers);
  const int start = opt.start_layer, end = opt.end_layer < 0 ? num_layers : opt.end_layer;
  if (T == 0) return InvalidArgument("empty token sequence");
  if (start < 0 || start > end || end > num_layers) {
    return InvalidArgument("layer range [" + std::to_string(start) + ", " + std::to_string(end) + ") is invalid");
  }
  const LayerRange& held = weights_->range;
  if (start < end && (start < held.begin || end > held.end)) {
    return InvalidArgument("layers [" + std::to_string(start) + ", " + std::to_string(end) +
                           ") are outside this pipeline stage's layers [" + std::to_string(held.begin) + ", " +
                           std::to_string(held.end) + ")");
  }
  // Positions of the new tokens: [pos0, pos0 + T); keys: [0, pos0 + T).
  const int64_t pos0 = cache ? cache->length : 0;
  if (cache) {
    if (start != 0 || end != num_layers) return InvalidArgument("a cached forward runs all layers");
    if (!opt.inject_topk.empty() || !opt.initial_topk.empty()) {
      return InvalidArgument("a cached forward computes its own top-k (no injection)");
    }
    if (pos0 + T > cache->capacity) {
      return InvalidArgument("cache holds " + std::to_string(cache->capacity) + " tokens; " +
                             std::to_string(pos0 + T) + " needed");
    }
  }
  const int64_t Hd = c.hidden_size, NH = c.num_heads, dqk = c.latent_dim();
  const MlaDims dims = Dims();
  const float eps = static_cast<float>(c.rms_norm_eps);

  ForwardResult result;
  result.layers.resize(num_layers);
  be.ResetNonFinite();
  Tensor h = be.Alloc(adt, {T, Hd});  // the residual stream
  if (start == 0) {
    for (int64_t t = 0; t < T; ++t) {
      if (tokens[t] < 0 || tokens[t] >= c.vocab_size) {
        return InvalidArgument("token id " + std::to_string(tokens[t]) + " at position " + std::to_string(t) +
                               " is outside the vocabulary [0, " + std::to_string(c.vocab_size) + ")");
      }
    }
    be.Embedding(placed_.embed, tokens, &h);
  } else {
    const Tensor& in = opt.hidden_in;
    const bool on_backend = in.device() == be.device() && in.dtype() == adt;
    if (in.shape() != Shape{T, Hd} || (!on_backend && in.dtype() != DType::kF32)) {
      return InvalidArgument("hidden_in must be f32 [" + std::to_string(T) + ", " + std::to_string(Hd) + "]");
    }
    // A copy: the stream is updated in place, and the caller's tensor (a cached activation) must
    // stay as it was.
    be.CopyRows(on_backend ? in : be.Convert(be.ToDevice(in), adt), 0, &h);
  }
  // The one indices buffer: each Full layer overwrites it (with a new tensor), Shared layers read it.
  Tensor topk_buffer;
  if (!opt.initial_topk.empty()) {
    RETURN_IF_ERROR(CheckTopk(opt.initial_topk, T, "initial_topk"));
    topk_buffer = be.ToDevice(opt.initial_topk);
  }

  const float attn_scale = static_cast<float>(c.softmax_scale());
  // Rows per chunk: the per-row activations (queries, attention, MLP) stay within a fixed budget
  // whatever T is; the latents and indexer keys (the keys every chunk reads) are whole-sequence.
  const int64_t chunk = opt.chunk_rows > 0 ? opt.chunk_rows : ForwardChunkRows(c, DTypeSize(adt));
  // The whole sequence's rope table for the keys; each chunk's queries use their own rows of it.
  const RopeTable rope_table = BuildRopeTable(c.rope, c.qk_rope_head_dim, pos0, T);

  for (int l = start; l < end; ++l) {
    const BackendLayer& W = placed_.layers[l];
    const bool traced = opt.trace.any() && (opt.trace_layers.empty() || opt.trace_layers[l]);
    LayerTrace* trace = traced ? &result.layers[l] : nullptr;
    auto keep = [&](const Tensor& t) { return opt.trace_on_device ? t : be.ToHost(t); };
    if (trace && opt.trace.hidden_in) {  // h changes in place: always a copy
      if (opt.trace_on_device) {
        trace->hidden_in = be.Alloc(adt, {T, Hd});
        be.CopyRows(h, 0, &trace->hidden_in);
      } else {
        trace->hidden_in = be.ToHost(h);
      }
    }

    // --- Whole-sequence parts: the attention input, the latents and the indexer keys ----------
    Tensor x = be.Alloc(adt, {T, Hd});
    be.RmsNorm(h, W.input_norm, eps, &x);
    Tensor ckv = be.Alloc(adt, {T, dqk});
    be.Linear(x, W.kv_a, &ckv);
    Tensor latent = be.Alloc(adt, {T, dqk});
    be.MlaLatent(ckv, W.kv_a_norm, eps, rope_table, dims, &latent);
    be.NoteNonFinite(latent, l);  // the sparse MLA kernels' fmaxf would drop a NaN latent's scores
    if (cache) {  // attend to every cached latent, the new ones included
      be.CopyRows(latent, pos0, &cache->latent[l]);
      latent = cache->latent[l].Slice0(0, pos0 + T);
    }

    // --- Top-k source: injected, own indexer (Full) or the nearest Full layer's (Shared) -------
    const bool injected = l < static_cast<int>(opt.inject_topk.size()) && !opt.inject_topk[l].empty();
    const bool own_indexer = !injected && pattern.is_full(l);
    Tensor index_keys;  // [pos0 + T, index_head_dim] when own_indexer
    Tensor topk;        // [T, k]: filled chunk by chunk when own_indexer
    if (injected) {
      RETURN_IF_ERROR(CheckTopk(opt.inject_topk[l], T, "inject_topk[" + std::to_string(l) + "]"));
      topk = be.ToDevice(opt.inject_topk[l]);
      if (pattern.is_full(l) || topk_buffer.empty()) topk_buffer = topk;
    } else if (own_indexer) {
      const BackendIndexer& I = W.indexer;
      index_keys = be.Alloc(adt, {T, c.index_head_dim});
      be.Linear(x, I.wk, &index_keys);
      be.LayerNorm(index_keys, I.k_norm_weight, I.k_norm_bias, 1e-6f, &index_keys);
      be.Rope(rope_table, c.indexer_rope_interleave, 1, c.index_head_dim, 0, &index_keys);
      if (cache) {
        be.CopyRows(index_keys, pos0, &cache->index_keys[l]);
        index_keys = cache->index_keys[l].Slice0(0, pos0 + T);
      }
      topk_buffer = be.Alloc(DType::kI32, {T, c.index_topk});
      topk = topk_buffer;
    } else if (topk_buffer.empty()) {
      return InvalidArgument("layer " + std::to_string(l) + " is Shared but no Full layer ran before it "
                             "(pass initial_topk when starting at a Shared layer)");
    } else {
      topk = topk_buffer;
    }

    // Whole-sequence traces that chunks fill row by row (one chunk: the chunk's tensors themselves).
    const bool single = chunk >= T;
    const bool want_q_latent = trace && ((opt.trace.indexer_inputs && pattern.is_full(l)) ||
                                         opt.trace.attention_inputs);
    Tensor q_latent_all, attn_q_all, lse_all;
    if (!single && want_q_latent) q_latent_all = be.Alloc(adt, {T, c.q_lora_rank});
    if (!single && trace && opt.trace.attention) {
      attn_q_all = be.Alloc(adt, {T, NH, dqk});
      lse_all = be.Alloc(DType::kF32, {T, NH});
    }

    for (int64_t t0 = 0; t0 < T; t0 += chunk) {
      const int64_t t1 = std::min(T, t0 + chunk), rows = t1 - t0;
      const Tensor xr = x.Slice0(t0, t1);
      const RopeTable rope_rows = single ? RopeTable() : BuildRopeTable(c.rope, c.qk_rope_head_dim, pos0 + t0, rows);
      const RopeTable& rope_q = single ? rope_table : rope_rows;

      // --- MLA queries ---------------------------------------------------------------------------
      Tensor q_lat = be.Alloc(adt, {rows, c.q_lora_rank});
      be.Linear(xr, W.q_a, &q_lat);
      be.RmsNorm(q_lat, W.q_a_norm, eps, &q_lat);
      Tensor q_abs = be.Alloc(adt, {rows, NH, dqk});
      AbsorbQueries(W, q_lat, rope_q, &q_abs);
      if (want_q_latent) {
        if (single) {
          q_latent_all = q_lat;
        } else {
          be.CopyRows(q_lat, t0, &q_latent_all);
        }
      }

      // --- This chunk's top-k: causal over keys [0, pos0 + t1) --------------------------------------
      Tensor topk_rows = topk.Slice0(t0, t1);
      if (own_indexer) {
        const BackendIndexer& I = W.indexer;
        const int64_t IH = c.index_n_heads, ID = c.index_head_dim;
        Tensor iq = be.Alloc(adt, {rows, IH * ID});
        be.Linear(q_lat, I.wq_b, &iq);
        be.Rope(rope_q, c.indexer_rope_interleave, IH, ID, 0, &iq);
        Tensor iw = be.Alloc(DType::kF32, {rows, IH});
        be.Linear(be.Convert(xr, DType::kF32), I.weights_proj, &iw);
        be.Scale(&iw, static_cast<float>(1.0 / std::sqrt(double(IH))));
        be.IndexerTopk(iq, index_keys.Slice0(0, pos0 + t1), iw, c.index_topk, /*query_offset=*/pos0 + t0,
                       static_cast<float>(1.0 / std::sqrt(double(ID))), &topk_rows);
      }

      // --- Sparse MLA over the selected latents, then values and o_proj ----------------------------
      // The sparse MLA kernels' running max (fmaxf) ignores NaN scores, so a NaN query need not
      // reach the layer's output: check it here, before it can become finite wrong output.
      be.NoteNonFinite(q_abs, l);
      Tensor out_lat = be.Alloc(adt, {rows, NH, c.kv_lora_rank});
      Tensor lse = be.Alloc(DType::kF32, {rows, NH});
      be.SparseMla(q_abs, latent, topk_rows, dims, attn_scale, &out_lat, &lse);
      if (trace && opt.trace.attention) {
        if (single) {
          attn_q_all = q_abs;
          lse_all = lse;
        } else {
          be.CopyRows(q_abs, t0, &attn_q_all);
          be.CopyRows(lse, t0, &lse_all);
        }
      }
      Tensor hr = h.Slice0(t0, t1);
      Tensor attn = be.Alloc(adt, {rows, NH * c.v_head_dim});
      be.AbsorbValue(out_lat, W.kv_b, dims, &attn);
      be.Linear(attn, W.o, &hr, /*accumulate=*/true);

      // --- MLP / MoE (per token, so per chunk) -------------------------------------------------------
      Tensor x2 = be.Alloc(adt, {rows, Hd});
      be.RmsNorm(hr, W.post_attention_norm, eps, &x2);
      if (W.is_moe) {
        Moe(be, c, W.moe, x2, &hr);
      } else {
        Mlp(be, W.mlp, x2, &hr, /*accumulate=*/true);
      }
    }
    be.NoteNonFinite(h, l);  // the layer's output (the residual stream)

    if (trace) {
      if (opt.trace.indexer_inputs && pattern.is_full(l)) trace->indexer_x = keep(x);
      if (want_q_latent) trace->q_latent = keep(q_latent_all);
      if (opt.trace.topk) trace->topk = keep(topk);
      if (opt.trace.attention) {
        trace->attn_q = keep(attn_q_all);
        trace->attn_lse = keep(lse_all);
      }
      if (opt.trace.attention || opt.trace.attention_inputs) {
        trace->attn_kv = keep(latent);
        trace->attn_scale = attn_scale;
      }
    }
  }
  if (cache) cache->length += T;
  if (end < num_layers || opt.return_hidden) result.hidden_out = opt.outputs_on_device ? h : be.ToHost(h);
  if (end < num_layers && !topk_buffer.empty()) {
    result.topk = opt.outputs_on_device ? topk_buffer : be.ToHost(topk_buffer);
  }
  if (end == num_layers && opt.compute_logits) {
    const Tensor last = opt.logits_last_row_only ? h.Slice0(T - 1, T) : h;
    const int64_t rows = last.size(0);
    Tensor hn = be.Alloc(adt, {rows, Hd});
    be.RmsNorm(last, placed_.final_norm, eps, &hn);
    Tensor logits = be.Alloc(DType::kF32, {rows, c.vocab_size});
    be.Linear(hn, placed_.lm_head, &logits);
    be.NoteNonFinite(logits, num_layers);
    result.logits = be.ToHost(logits);
  }
  // One read per forward: NaN or Inf anywhere is an error naming where it first appeared.
  if (const int32_t bad = be.FirstNonFinite(); bad >= 0) return NonFiniteError(bad);
  if (end == num_layers && opt.compute_loss) {
    ASSIGN_OR_RETURN(result.token_nll, NextTokenNll(h, tokens));
  }
  return result;
}

}  // namespace indexcache
