// DsaModel's batched decode (serving): Prefill into a request's rows of a BatchedKvCache, and
// DecodeStep, one token of each of B requests through every layer at once. Written once over
// model/backend.h like Forward (model/dsa_model.cc), whose per-layer operations it repeats with
// B rows instead of T.
#include <algorithm>
#include <cmath>
#include <set>
#include <string>

#include "kernels/rope.h"
#include "model/batched_kv_cache.h"
#include "model/dsa_model.h"
#include "model/moe_block.h"

namespace indexcache {

namespace {

// A rope table whose row i holds position positions[i] (each request of a batch at its own length).
RopeTable RopeTableAt(const RopeConfig& rope, int64_t rope_dim, const std::vector<int64_t>& positions) {
  RopeTable t;
  t.rope_dim = rope_dim;
  t.num_positions = static_cast<int64_t>(positions.size());
  t.first_position = positions.empty() ? 0 : positions.front();
  const int64_t half = rope_dim / 2;
  t.cos.resize(positions.size() * half);
  t.sin.resize(positions.size() * half);
  for (size_t i = 0; i < positions.size(); ++i) {
    const RopeTable one = BuildRopeTable(rope, rope_dim, positions[i], 1);
    std::copy(one.cos.begin(), one.cos.end(), t.cos.begin() + i * half);
    std::copy(one.sin.begin(), one.sin.end(), t.sin.begin() + i * half);
  }
  return t;
}

Tensor HostInts(const std::vector<int64_t>& v) {
  Tensor t = Tensor::Zeros(DType::kI32, {static_cast<int64_t>(v.size())});
  for (size_t i = 0; i < v.size(); ++i) t.data<int32_t>()[i] = static_cast<int32_t>(v[i]);
  return t;
}

}  // namespace

StatusOr<ForwardResult> DsaModel::Prefill(BatchedKvCache* cache, int64_t id, const std::vector<int32_t>& tokens,
                                          ForwardOptions options) const {
  if (cache == nullptr) return InvalidArgument("Prefill: no batched cache");
  const BatchedKvCache::Slot* slot = cache->Find(id);
  if (!slot) return cache->View(id).status();  // names the missing request
  const int64_t T = static_cast<int64_t>(tokens.size());
  if (slot->length + T > slot->capacity) {
    return InvalidArgument("batched cache: request " + std::to_string(id) + " holds " + std::to_string(slot->capacity) +
                           " tokens; " + std::to_string(slot->length) + " cached + " + std::to_string(T) +
                           " new do not fit");
  }
  if (!cache->fp8_latents()) {  // the forward appends to the request's rows in place
    ASSIGN_OR_RETURN(KvCache view, cache->View(id));
    options.cache = &view;
    ASSIGN_OR_RETURN(ForwardResult result, Forward(tokens, options));
    RETURN_IF_ERROR(cache->SetLength(id, view.length));
    return result;
  }
  // FP8 latents: the prompt runs over a temporary activation-dtype copy of the request's latents
  // (its cached rows dequantised, as decode reads them), appending to the pool's index keys in
  // place; the new rows then go back quantised.
  Backend& be = *backend_;
  const int64_t base = slot->base, cached = slot->length;
  KvCache tmp;
  tmp.capacity = cached + T;
  tmp.length = cached;
  tmp.pattern = cache->pattern();
  ASSIGN_OR_RETURN(tmp.index_keys, cache->IndexKeyViews(id));
  std::vector<int64_t> old_rows(cached), new_rows(T);
  for (int64_t i = 0; i < cached; ++i) old_rows[i] = base + i;
  for (int64_t i = 0; i < T; ++i) new_rows[i] = base + cached + i;
  const Tensor old_idx = be.ToDevice(HostInts(old_rows)), new_idx = be.ToDevice(HostInts(new_rows));
  const LatentFp8Layout& layout = cache->latent_fp8_layout();
  for (const Tensor& pool : cache->latent) {
    tmp.latent.push_back(be.Alloc(be.activation_dtype(), {tmp.capacity, layout.dim()}));
    if (cached > 0) {
      Tensor head = tmp.latent.back().Slice0(0, cached);
      be.DequantizeLatentRows(pool, old_idx, layout, &head);
    }
  }
  options.cache = &tmp;
  ASSIGN_OR_RETURN(ForwardResult result, Forward(tokens, options));
  for (size_t l = 0; l < cache->latent.size(); ++l) {
    be.QuantizeLatentRows(tmp.latent[l].Slice0(cached, cached + T), new_idx, layout, &cache->latent[l]);
  }
  RETURN_IF_ERROR(cache->SetLength(id, tmp.length));
  return result;
}

StatusOr<DecodeStepResult> DsaModel::DecodeStep(const std::vector<int32_t>& next_tokens, BatchedKvCache* cache,
                                                const DecodeStepOptions& options) const {
  if (cache == nullptr) return InvalidArgument("DecodeStep: no batched cache");
  return DecodeStep(cache->requests(), next_tokens, cache, options);
}

StatusOr<DecodeStepResult> DsaModel::DecodeStep(const std::vector<int64_t>& requests,
                                                const std::vector<int32_t>& next_tokens, BatchedKvCache* cache,
                                                const DecodeStepOptions& options) const {
  const ModelConfig& c = config_;
  Backend& be = *backend_;
  const DType adt = be.activation_dtype();
  const int num_layers = static_cast<int>(c.num_layers);
  const int64_t B = static_cast<int64_t>(requests.size());

  // --- Validation: nothing is written unless the whole step can run ---------------------------
  if (cache == nullptr) return InvalidArgument("DecodeStep: no batched cache");
  if (B < 1 || B > BatchedKvCache::kMaxRequests) {
    return InvalidArgument("DecodeStep: " + std::to_string(B) + " requests; a step takes 1 to " +
                           std::to_string(BatchedKvCache::kMaxRequests));
  }
  if (static_cast<int64_t>(next_tokens.size()) != B) {
    return InvalidArgument("DecodeStep: " + std::to_string(next_tokens.size()) + " tokens for " + std::to_string(B) +
                           " requests (one each)");
  }
  const LayerRange& held = weights_->range;
  if (held.begin != 0 || held.end != num_layers) {
    return InvalidArgument("DecodeStep: the model holds layers [" + std::to_string(held.begin) + ", " +
                           std::to_string(held.end) + ") only; batched decode runs all layers");
  }
  const bool fp8 = cache->fp8_latents();
  const LatentFp8Layout& fp8_layout = cache->latent_fp8_layout();
  if (static_cast<int>(cache->latent.size()) != num_layers || cache->pattern().num_layers() != num_layers ||
      cache->latent[0].device() != be.device() || cache->latent[0].dtype() != (fp8 ? DType::kU8 : adt) ||
      cache->latent[0].size(1) != (fp8 ? fp8_layout.row_bytes() : c.latent_dim())) {
    return InvalidArgument("DecodeStep: the batched cache was made for another model or backend");
  }
  const IndexPattern& pattern = cache->pattern();
  if (!pattern.is_full(0)) return InvalidArgument("DecodeStep: layer 0 is Shared; a cached decode needs it Full");
  std::vector<int64_t> base(B), pos(B), rows(B), key_count(B);
  std::set<int64_t> seen;
  for (int64_t i = 0; i < B; ++i) {
    const int64_t id = requests[i];
    const BatchedKvCache::Slot* s = cache->Find(id);
    if (!s) return InvalidArgument("DecodeStep: no request " + std::to_string(id) + " in the batched cache");
    if (!seen.insert(id).second) {
      return InvalidArgument("DecodeStep: request " + std::to_string(id) + " appears twice in one step");
    }
    if (s->length >= s->capacity) {
      return InvalidArgument("DecodeStep: request " + std::to_string(id) + " is full (" +
                             std::to_string(s->capacity) + " of " + std::to_string(s->capacity) +
                             " tokens cached); remove it or give it a larger slot");
    }
    if (next_tokens[i] < 0 || next_tokens[i] >= c.vocab_size) {
      return InvalidArgument("DecodeStep: token id " + std::to_string(next_tokens[i]) + " of request " +
                             std::to_string(id) + " is outside the vocabulary [0, " + std::to_string(c.vocab_size) +
                             ")");
    }
    base[i] = s->base;
    pos[i] = s->length;
    rows[i] = s->base + s->length;  // the new token's row in the pool
    key_count[i] = s->length + 1;    // the keys its query sees: the cached ones and its own
  }

  const int64_t Hd = c.hidden_size, NH = c.num_heads, dqk = c.latent_dim();
  const MlaDims dims = Dims();
  const float eps = static_cast<float>(c.rms_norm_eps);
  const float attn_scale = static_cast<float>(c.softmax_scale());
  const RopeTable rope = RopeTableAt(c.rope, c.qk_rope_head_dim, pos);
  const Tensor new_rows = be.ToDevice(HostInts(rows));   // where each request's new latent / key goes
  const Tensor offsets = be.ToDevice(HostInts(base));    // each request's first row in the pool

  be.ResetNonFinite();
  Tensor h = be.Alloc(adt, {B, Hd});  // the residual stream, one row per request
  be.Embedding(placed_.embed, next_tokens, &h);
  Tensor topk_buffer;  // [B, k] pool rows: each Full layer makes a new one, Shared layers read it

  for (int l = 0; l < num_layers; ++l) {
    const BackendLayer& W = placed_.layers[l];
    Tensor x = be.Alloc(adt, {B, Hd});
    be.RmsNorm(h, W.input_norm, eps, &x);

    // --- The new latents, into each request's next row of the pool ----------------------------
    Tensor ckv = be.Alloc(adt, {B, dqk});
    be.Linear(x, W.kv_a, &ckv);
    Tensor latent = be.Alloc(adt, {B, dqk});
    be.MlaLatent(ckv, W.kv_a_norm, eps, rope, dims, &latent);
    be.NoteNonFinite(latent, l);
    if (fp8) {
      be.QuantizeLatentRows(latent, new_rows, fp8_layout, &cache->latent[l]);
    } else {
      be.ScatterRows(latent, new_rows, &cache->latent[l]);
    }

    // --- MLA queries ---------------------------------------------------------------------------
    Tensor q_lat = be.Alloc(adt, {B, c.q_lora_rank});
    be.Linear(x, W.q_a, &q_lat);
    be.RmsNorm(q_lat, W.q_a_norm, eps, &q_lat);
    Tensor q_abs = be.Alloc(adt, {B, NH, dqk});
    AbsorbQueries(W, q_lat, rope, &q_abs);

    // --- Top-k: Full layers run the indexer per request over its own keys ----------------------
    if (pattern.is_full(l)) {
      const BackendIndexer& I = W.indexer;
      const int64_t IH = c.index_n_heads, ID = c.index_head_dim;
      Tensor keys = be.Alloc(adt, {B, ID});
      be.Linear(x, I.wk, &keys);
      be.LayerNorm(keys, I.k_norm_weight, I.k_norm_bias, 1e-6f, &keys);
      be.Rope(rope, c.indexer_rope_interleave, 1, ID, 0, &keys);
      be.ScatterRows(keys, new_rows, &cache->index_keys[l]);
      Tensor iq = be.Alloc(adt, {B, IH * ID});
      be.Linear(q_lat, I.wq_b, &iq);
      be.Rope(rope, c.indexer_rope_interleave, IH, ID, 0, &iq);
      Tensor iw = be.Alloc(DType::kF32, {B, IH});
      be.Linear(be.Convert(x, DType::kF32), I.weights_proj, &iw);
      be.Scale(&iw, static_cast<float>(1.0 / std::sqrt(double(IH))));
      topk_buffer = be.Alloc(DType::kI32, {B, c.index_topk});
      // Per request, causal over its own keys [0, pos_i] (its rows of the pool, the new one included).
      be.IndexerTopkRequests(iq, cache->index_keys[l], iw, c.index_topk, base, key_count,
                             static_cast<float>(1.0 / std::sqrt(double(ID))), &topk_buffer);
      // Indices into each request's keys -> rows of the pool (-1 padding stays -1).
      be.OffsetIndices(offsets, &topk_buffer);
    } else if (topk_buffer.empty()) {
      return InvalidArgument("layer " + std::to_string(l) + " is Shared but no Full layer ran before it");
    }

    // --- One sparse MLA over all B queries against the pooled latents, then values and o_proj --
    be.NoteNonFinite(q_abs, l);
    Tensor out_lat = be.Alloc(adt, {B, NH, c.kv_lora_rank});
    Tensor lse = be.Alloc(DType::kF32, {B, NH});
    if (fp8) {  // the selected rows, dequantised (in place by the CUDA kernel)
      be.SparseMlaFp8Cache(q_abs, cache->latent[l], fp8_layout, topk_buffer, dims, attn_scale, &out_lat, &lse);
    } else {
      be.SparseMla(q_abs, cache->latent[l], topk_buffer, dims, attn_scale, &out_lat, &lse);
    }
    Tensor attn = be.Alloc(adt, {B, NH * c.v_head_dim});
    be.AbsorbValue(out_lat, W.kv_b, dims, &attn);
    be.Linear(attn, W.o, &h, /*accumulate=*/true);

    // --- MLP / MoE over the B rows ---------------------------------------------------------------
    Tensor x2 = be.Alloc(adt, {B, Hd});
    be.RmsNorm(h, W.post_attention_norm, eps, &x2);
    if (W.is_moe) {
      Moe(be, c, W.moe, x2, &h);
    } else {
      Mlp(be, W.mlp, x2, &h, /*accumulate=*/true);
    }
    be.NoteNonFinite(h, l);
  }

  DecodeStepResult result;
  result.requests = requests;
  if (options.compute_logits) {
    Tensor hn = be.Alloc(adt, {B, Hd});
    be.RmsNorm(h, placed_.final_norm, eps, &hn);
    Tensor logits = be.Alloc(DType::kF32, {B, c.vocab_size});
    be.Linear(hn, placed_.lm_head, &logits);
    be.NoteNonFinite(logits, num_layers);
    result.logits = be.ToHost(logits);
  }
  if (const int32_t bad = be.FirstNonFinite(); bad >= 0) return NonFiniteError(bad);
  for (int64_t i = 0; i < B; ++i) RETURN_IF_ERROR(cache->SetLength(requests[i], pos[i] + 1));
  return result;
}

}  // namespace indexcache
