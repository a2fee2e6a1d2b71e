// BatchedKvCache: the decode state of many requests at once (serving), for DsaModel::DecodeStep.
//
// One pooled backend buffer per layer holds every request's MLA latents ([pool_rows, latent_dim])
// and, for the pattern's Full layers only, one holds their indexer keys ([pool_rows,
// index_head_dim]; Shared layers keep none, as in KvCache). Request r owns the rows
// [base_r, base_r + capacity_r) of every buffer; its first length_r rows are its tokens so far.
// A first-fit allocator over the pool's rows adds requests and frees them again (adjacent free
// ranges merge). Request ids count up from 0 and are never reused.
//
// With BatchedKvCacheOptions::fp8_latents the latent buffers hold kernels/latent_fp8.h rows instead
// (V3.2: 656 bytes per token and layer instead of 1152, so 1.75x the tokens in the same memory):
// DecodeStep quantises each new latent as it stores it and dequantises the rows a step selects
// before its sparse MLA; Prefill runs the prompt over a temporary bf16 copy of the request's rows
// and stores the new rows quantised. The indexer keys stay in the activation dtype.
//
// A request's prompt goes in through DsaModel::Prefill (the per-request cached forward writing
// straight into the request's rows); DsaModel::DecodeStep then runs one token of each of B
// requests through every layer at once. The pool's rows are addressed by int32 top-k indices, so
// pool_rows < 2^31.
#pragma once

#include <cstdint>
#include <map>
#include <vector>

#include "core/status.h"
#include "core/tensor.h"
#include "kernels/latent_fp8.h"
#include "model/dsa_model.h"
#include "model/pattern.h"

namespace indexcache {

struct BatchedKvCacheOptions {
  bool fp8_latents = false;  // store latents in the FP8 row format (kernels/latent_fp8.h)
};

class BatchedKvCache {
 public:
  // Requests a cache holds at once, and so the largest decode batch.
  static constexpr int64_t kMaxRequests = int64_t{1} << 16;
  // Rows of one pooled buffer: top-k indices into the pool are int32.
  static constexpr int64_t kMaxPoolRows = (int64_t{1} << 31) - 1;

  struct Slot {
    int64_t base = 0;      // first row of the request in every pooled buffer
    int64_t capacity = 0;  // rows it owns
    int64_t length = 0;    // tokens cached (the next token's position)
  };

  // An empty pool of `pool_rows` rows per layer on `model`'s backend, for `pattern` (nullptr: the
  // model's). Errors: pool_rows outside [1, kMaxPoolRows], a pattern the model cannot run, a model
  // holding only a pipeline stage, or more bytes than the backend can allocate (named in GB), or
  // fp8_latents for a model whose latent split the FP8 format does not take (named).
  static StatusOr<BatchedKvCache> Create(const DsaModel& model, int64_t pool_rows,
                                         const IndexPattern* pattern = nullptr,
                                         const BatchedKvCacheOptions& options = {});

  // Reserves `capacity` rows (1 .. kMaxSeqLen) for a new request and returns its id. Errors when
  // kMaxRequests are live or no free range of that many rows is left (naming the largest one).
  StatusOr<int64_t> Add(int64_t capacity);
  // Frees request `id`'s rows.
  Status Remove(int64_t id);
  // The request's slot, or nullptr if `id` is not live.
  const Slot* Find(int64_t id) const;
  bool Has(int64_t id) const { return Find(id) != nullptr; }
  // Live request ids, ascending.
  std::vector<int64_t> requests() const;
  int64_t num_requests() const { return static_cast<int64_t>(slots_.size()); }
  int64_t pool_rows() const { return pool_rows_; }
  int64_t free_rows() const;
  int64_t largest_free_range() const;
  const IndexPattern& pattern() const { return pattern_; }
  // Whether latents are stored as FP8 rows, and their layout (meaningful only then).
  bool fp8_latents() const { return fp8_latents_; }
  const LatentFp8Layout& latent_fp8_layout() const { return fp8_layout_; }

  // Sets how many of request `id`'s rows hold tokens (0 .. capacity). DsaModel::Prefill and
  // DecodeStep keep it; a caller that fills the rows itself (a benchmark writing random latents)
  // sets it here, and rolls a request back with it.
  Status SetLength(int64_t id, int64_t length);

  // A per-request KvCache whose tensors view request `id`'s rows of the pool (length included):
  // Forward(tokens, {.cache = &view}) appends to the request in place. DsaModel::Prefill uses it
  // and stores the view's new length back; a caller using it directly must call SetLength. An FP8
  // cache has no such view of its latents (an error); its index-key views are IndexKeyViews.
  StatusOr<KvCache> View(int64_t id);
  // Request `id`'s rows of every Full layer's index-key buffer (empty tensors for Shared layers).
  StatusOr<std::vector<Tensor>> IndexKeyViews(int64_t id);

  // Per layer: [pool_rows, latent_dim] latents (FP8 cache: [pool_rows, row_bytes] kU8);
  // [pool_rows, index_head_dim] indexer keys for Full layers, empty tensors for Shared ones.
  // Backend tensors (activation dtype unless FP8).
  std::vector<Tensor> latent;
  std::vector<Tensor> index_keys;

 private:
  Status NotFound(int64_t id) const;

  int64_t pool_rows_ = 0;
  IndexPattern pattern_;
  bool fp8_latents_ = false;
  LatentFp8Layout fp8_layout_;
  int64_t next_id_ = 0;
  std::map<int64_t, Slot> slots_;     // live requests by id
  std::map<int64_t, int64_t> free_;   // free row ranges: begin -> end (disjoint, non-adjacent)
};

}  // namespace indexcache
