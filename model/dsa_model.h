// DsaModel: a DSA model (deepseek_v32 / glm_moe_dsa) and its forward pass under an IndexCache
// pattern. Written once against the kernel interfaces in kernels/ (CPU references today).
//
// The forward runs on a Backend (model/backend.h): the CPU reference or CUDA. Inputs and outputs
// (tokens, logits, traces, injected indices, cached activations) are host tensors in every case.
//
// The forward is shaped for the trainer and the pattern search:
//   (a) per-layer top-k injection (ForwardOptions::inject_topk) and capture (trace.topk);
//   (b) capture of each layer's attention inputs and per-head log-sum-exp (trace.attention) and
//       of the indexer's inputs (trace.indexer_inputs), from which any layer's attention
//       distribution can be rebuilt without a [T, L] matrix;
//   (c) a forward that starts at any layer from cached activations (start_layer + hidden_in +
//       initial_topk) and/or stops early (end_layer);
//   (d) bounded memory at any length: the per-token work runs in row chunks
//       (ForwardOptions::chunk_rows) over the whole sequence's latents and indexer keys, and
//       trace.attention_inputs keeps what attention is rebuilt from instead of its queries.
#pragma once

#include <optional>
#include <string>
#include <vector>

#include "core/status.h"
#include "core/tensor.h"
#include "model/backend.h"
#include "model/backend_weights.h"
#include "model/config.h"
#include "model/pattern.h"
#include "model/weights.h"

namespace indexcache {

struct LayerTrace {
  Tensor hidden_in;  // [T, hidden]       residual stream entering the layer
  Tensor indexer_x;  // [T, hidden]       input_layernorm output (indexer's k / weights input); Full layers
  Tensor q_latent;   // [T, q_lora_rank]  q_a_layernorm output (the indexer's and attention's q input)
  Tensor topk;       // [T, index_topk]   int32 keys this layer attended (own or reused), -1 pad
  Tensor attn_q;     // [T, heads, latent_dim] absorbed queries, rope applied, unscaled
  Tensor attn_kv;    // [T, latent_dim]   latents (normalised kv latent, then rotated k rope)
  Tensor attn_lse;   // [T, heads]        log-sum-exp of scale * q.kv over the selected keys
  float attn_scale = 0.0f;
};

struct TraceRequest {
  bool hidden_in = false;
  bool indexer_inputs = false;  // indexer_x and q_latent of Full layers (Shared ones run no indexer)
  bool topk = false;
  bool attention = false;
  // q_latent and attn_kv (and attn_scale) only: what attention's queries are recomputed from
  // (DsaModel::AbsorbedQueries) without keeping [T, heads, latent_dim] per layer.
  bool attention_inputs = false;
  bool any() const { return hidden_in || indexer_inputs || topk || attention || attention_inputs; }
};

// Decode state: every layer's MLA latents and, for Full layers only, the indexer keys of all
// tokens seen so far (Shared layers keep no indexer keys: IndexCache's memory saving in decode).
struct KvCache {
  int64_t capacity = 0;              // tokens the buffers hold
  int64_t length = 0;                // tokens stored so far (the next token's position)
  std::vector<Tensor> latent;        // per layer [capacity, latent_dim] backend tensors
  std::vector<Tensor> index_keys;    // per layer [capacity, index_head_dim]; empty for Shared layers
  IndexPattern pattern;              // the pattern the cache was made for
};

class BatchedKvCache;  // model/batched_kv_cache.h

struct DecodeStepOptions {
  bool compute_logits = true;  // false: only the caches advance (benchmarks of the layers alone)
};

struct DecodeStepResult {
  std::vector<int64_t> requests;  // the requests stepped, in row order
  Tensor logits;                  // [B, vocab] f32 host: row i is requests[i]'s next-token logits
};

struct ForwardOptions {
  const IndexPattern* pattern = nullptr;  // nullptr: the model's pattern
  int start_layer = 0;                    // > 0: hidden_in holds the stream entering this layer
  int end_layer = -1;                     // exclusive; -1: all layers
  bool compute_logits = true;             // only when the last layer runs
  // Next-token losses of `tokens` (position t predicts tokens[t + 1]) computed on the backend in
  // row chunks, so no [T, vocab] logit matrix reaches the host: ForwardResult::token_nll.
  bool compute_loss = false;
  bool logits_last_row_only = false;      // logits of the final position only (generation, benchmarks)
  bool return_hidden = false;             // copy the final stream to the host even when all layers ran
  // hidden_out and topk stay backend tensors (activation dtype, int32) instead of host copies:
  // what a device-to-device pipeline link sends on.
  bool outputs_on_device = false;
  // [T, hidden] when start_layer > 0: a host f32 tensor, or a backend tensor (e.g. a device trace
  // kept by trace_on_device). Never modified: the forward works on a copy.
  Tensor hidden_in;
  Tensor initial_topk;                    // [T, k] int32 (host or backend): the indices buffer entering start_layer
  std::vector<Tensor> inject_topk;        // per layer; a non-empty [T, k] int32 replaces that layer's top-k
  TraceRequest trace;
  std::vector<bool> trace_layers;         // which layers to trace; empty: all that run
  bool trace_on_device = false;           // keep traces as backend tensors (activation dtype) instead
                                          // of f32 host copies: the trainer's GPU path, the search's cache
  // Decode / chunked prefill: the tokens continue the cached sequence at position cache->length,
  // attend to everything cached, and are appended. Runs all layers; the cache fixes the pattern.
  KvCache* cache = nullptr;
  // Rows per chunk of the per-token work (queries, indexer top-k, attention, MLP/MoE), which
  // runs chunk after chunk over the whole sequence's latents and indexer keys; 0: as many as fit
  // kForwardChunkBytes of activations (ForwardChunkRows). Traces still cover the whole sequence.
  int64_t chunk_rows = 0;
};


struct ForwardResult {
  Tensor logits;      // [T, vocab] f32 (if computed)
  Tensor hidden_out;  // [T, hidden] stream after the last layer run (before the final norm); set when
                      // the forward stopped early or return_hidden asked for it
  Tensor topk;        // [T, k] the indices buffer after the last layer run, when it stopped early
  std::vector<double> token_nll;  // [T - 1] next-token losses (nats), when compute_loss asked for them
  std::vector<LayerTrace> layers;  // num_layers entries; filled where traced
};

// The backend for a device: "cpu" or "cuda" (an error where this build or machine has no GPU).
StatusOr<std::shared_ptr<Backend>> MakeBackend(const std::string& device);

class DsaModel {
 public:
  // Loads config.json and the safetensors weights. `pattern_spec` (the CLI's --pattern) overrides
  // the config's pattern keys. Indexer weights load for every layer that has them; Full layers
  // must have them. `pattern_source` names where pattern_spec came from in errors (a train config
  // field, not the command line, for the trainer). `layers` restricts loading to a pipeline stage's
  // range (embedding only on the first stage, final norm and LM head only on the last); Forward
  // then runs inside that range. On the CUDA backend an FP8 checkpoint's matrices stay FP8 on the
  // device (model/backend.h, PlacedWeight) and are uploaded tensor by tensor from the shards; the
  // CPU backend dequantises them to fp32 at load.
  static StatusOr<DsaModel> Load(const std::string& model_dir, const std::optional<std::string>& pattern_spec = {},
                                 const std::string& device = "cpu", const std::string& pattern_source = "--pattern",
                                 LayerRange layers = {});
  static StatusOr<DsaModel> FromParts(ModelConfig config, ModelWeights weights, IndexPattern pattern,
                                      std::shared_ptr<Backend> backend);

  const ModelConfig& config() const { return config_; }
  const IndexPattern& pattern() const { return pattern_; }
  // The host copy. Its WeightMatrix tensors are empty (shape only, in WeightMatrix::fp8) where the
  // backend keeps them FP8-resident; indexers are always there in fp32.
  const ModelWeights& weights() const { return *weights_; }
  // The layers this model holds ([0, num_layers) unless loaded as a pipeline stage).
  const LayerRange& layer_range() const { return weights_->range; }
  Backend& backend() const { return *backend_; }
  // Replaces layer `layer`'s indexer (host copy and backend copy): the trainer keeps the model's
  // indexers equal to its fp32 master weights after every optimizer step.
  Status SetIndexer(int layer, const IndexerWeights& weights);
  // Replaces the backend copy of layer `layer`'s indexer from f32 tensors already on the backend
  // (the trainer's device-resident masters), converting to the placed dtypes on the device; the
  // host copy (weights().layers[layer].indexer) is left as it was. Shapes are checked.
  Status SetIndexerOnBackend(int layer, const BackendIndexer& f32);
  // Checks that every Full layer of `pattern` has indexer weights.
  Status CheckPattern(const IndexPattern& pattern) const;
  Status SetPattern(IndexPattern pattern);
  int64_t ParameterCount() const;
  // The placed weights' bytes by dtype and the backend's FP8 dequantisation scratch.
  ResidentWeightBytes ResidentBytes() const;

  // An empty decode cache for up to `capacity` tokens under `pattern` (nullptr: the model's).
  StatusOr<KvCache> NewCache(int64_t capacity, const IndexPattern* pattern = nullptr) const;

  // One sequence of token ids (positions 0..T-1, or continuing options.cache). Ids outside
  // [0, vocab) are an error.
  StatusOr<ForwardResult> Forward(const std::vector<int32_t>& tokens, const ForwardOptions& options = {}) const;

  // --- Batched decode (serving; model/batched_decode.cc) ---------------------------------------
  // Runs `tokens` for request `id` of a batched cache (its prompt, or any continuation) through
  // the per-request cached forward, which writes straight into the request's rows of the pool
  // (BatchedKvCache::View); the request's length advances on success. `options.cache` is set here.
  StatusOr<ForwardResult> Prefill(BatchedKvCache* cache, int64_t id, const std::vector<int32_t>& tokens,
                                  ForwardOptions options = {}) const;
  // One decode step of B requests at once: next_tokens[i] is the next token of requests[i]
  // (distinct live ids of `cache`, any lengths), at position length_i, attending to that request's
  // cached tokens and itself. Every GEMM (projections, o_proj, MLP / MoE, LM head) runs over the
  // B rows together; the sparse MLA runs once over all B queries against the pooled latents (each
  // request's top-k offset to its rows of the pool); Full layers run the indexer per request over
  // its own keys, Shared layers reuse the indices buffer as Forward does. Each request's length
  // advances by one on success. The result equals B separate cached Forward calls of one token.
  // Errors, checked before any work (the cache is left as it was): unknown or repeated ids, B
  // outside [1, kMaxRequests], token ids outside the vocabulary, a full request (named), a cache
  // from another model. NaN / Inf activations are an error naming the first layer, as in Forward;
  // the lengths then stay as they were (the rows the step wrote lie past them).
  StatusOr<DecodeStepResult> DecodeStep(const std::vector<int64_t>& requests, const std::vector<int32_t>& next_tokens,
                                        BatchedKvCache* cache, const DecodeStepOptions& options = {}) const;
  // The same for every live request of the cache, in ascending id order (next_tokens[i] for the
  // i-th of cache->requests()).
  StatusOr<DecodeStepResult> DecodeStep(const std::vector<int32_t>& next_tokens, BatchedKvCache* cache,
                                        const DecodeStepOptions& options = {}) const;

  // Layer `layer`'s absorbed attention queries q_abs [rows, heads, latent_dim] (rope applied for
  // positions first_position ..) from its q_latent rows (a trace.attention_inputs trace): the same
  // operations the forward runs, so a caller can rebuild attention in query chunks instead of
  // keeping trace.attention's [T, heads, latent_dim].
  Status AbsorbedQueries(int layer, const Tensor& q_latent, int64_t first_position, Tensor* q_abs) const;

 private:
  // Next-token losses [T - 1] from the final stream h [T, hidden] (backend tensor): final norm,
  // LM head and cross-entropy in row chunks on the backend. Non-finite logits are an error.
  StatusOr<std::vector<double>> NextTokenNll(const Tensor& h, const std::vector<int32_t>& tokens) const;
  void AbsorbQueries(const BackendLayer& W, const Tensor& q_lat, const RopeTable& rope, Tensor* q_abs) const;
  MlaDims Dims() const;
  ModelConfig config_;
  // On the heap so its address is stable: the CPU backend's weights borrow its memory.
  std::shared_ptr<ModelWeights> weights_;
  std::shared_ptr<Backend> backend_;
  // The error for a forward whose activations first turned NaN/Inf at `tag` (a layer; num_layers
  // for the logits).
  Status NonFiniteError(int32_t tag) const;

  BackendWeights placed_;
  IndexPattern pattern_;
};

}  // namespace indexcache
