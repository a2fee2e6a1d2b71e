// SequenceSampler: cuts a TokenSource into training sequences and deals them out to data-parallel
// ranks, deterministically and resumably.
//
// Windows. A window is seq_len consecutive tokens. By default a window never crosses a document
// boundary: document d yields floor(len(d) / seq_len) windows at offsets 0, seq_len, 2*seq_len, ...
// (the tail is dropped, shorter documents yield none). With cross_documents the documents are
// concatenated in order and the stream is cut into floor(total / seq_len) windows, so no token is
// wasted; nothing is inserted between documents, so data meant to be packed should carry its own
// end-of-document tokens (Megatron's --append-eod). For next-token training on C-token contexts,
// ask for seq_len = C + 1.
//
// Order. Windows are numbered in document order; epoch e visits them in a permutation drawn from
// (seed, e) with our own Fisher-Yates over std::mt19937_64 (whose output the standard fixes; the
// standard library's shuffle and distributions are not portable across implementations). The
// sampler's sequence stream is epoch 0's permutation, then epoch 1's, and so on forever. The
// permutations of the (at most two) epochs in use are kept in memory: 8 bytes per window each.
//
// Batches. Step t consumes stream positions [t*G, (t+1)*G) where G is global_batch (a batch may
// run across an epoch boundary: every window is seen once per epoch). Rank r of `world` receives
// the contiguous slice [r*G/world, (r+1)*G/world) of that, so any number of ranks that divides G
// together see exactly the batches one rank would.
//
// Resuming. The cursor is (epoch, position in epoch) plus what identifies the stream (seed,
// seq_len, cross_documents, windows per epoch); Restore refuses a cursor from another stream. The
// cursor does not depend on world or global_batch, so a run may resume on a different number of
// GPUs and still continue the same stream.
//
// Not thread-safe: one sampler per rank (each rank builds the same permutation independently).
#pragma once

#include <cstdint>
#include <memory>
#include <nlohmann/json.hpp>
#include <vector>

#include "core/status.h"
#include "data/token_source.h"

namespace indexcache {

struct SamplerOptions {
  int64_t seq_len = 0;       // tokens per sequence, >= 1
  int64_t global_batch = 1;  // sequences per step over all ranks, >= 1
  uint64_t seed = 0;
  bool cross_documents = false;
  // > 0: every token id must be in [0, vocab_size); NextBatch names the data file, document and
  // offset of one that is not (the model's own check could only say "position 5").
  int64_t vocab_size = 0;
};

struct SamplerCursor {
  int64_t epoch = 0;
  int64_t position = 0;  // sequences of this epoch already consumed, in [0, windows)
  // The stream the cursor belongs to.
  uint64_t seed = 0;
  int64_t seq_len = 0;
  bool cross_documents = false;
  int64_t windows = 0;  // sequences per epoch
  bool operator==(const SamplerCursor& o) const {
    return epoch == o.epoch && position == o.position && seed == o.seed && seq_len == o.seq_len &&
           cross_documents == o.cross_documents && windows == o.windows;
  }
};

nlohmann::json CursorToJson(const SamplerCursor& cursor);
// Errors name the field: "sampler cursor: field 'epoch' must be a non-negative integer".
StatusOr<SamplerCursor> CursorFromJson(const nlohmann::json& json);

class SequenceSampler {
 public:
  using Cursor = SamplerCursor;
  using Batch = std::vector<std::vector<int32_t>>;

  // Enumerates the windows (O(documents)); an error if the options are invalid or the source
  // yields no window.
  static StatusOr<std::unique_ptr<SequenceSampler>> Create(std::shared_ptr<TokenSource> source,
                                                           SamplerOptions options);

  // This rank's global_batch / world sequences of the next step, and advances the cursor by the
  // whole global batch. An error (bad rank/world, global_batch not divisible by world, a damaged
  // token) leaves the cursor where it was.
  StatusOr<Batch> NextBatch(int rank, int world);

  Cursor cursor() const;
  Status Restore(const Cursor& cursor);

  const SamplerOptions& options() const { return options_; }
  const TokenSource& source() const { return *source_; }
  int64_t windows() const { return windows_; }  // sequences per epoch
  // Where window w (in document order, 0 <= w < windows()) starts: a document and an offset in
  // it (with cross_documents, the document holding the window's first token).
  std::pair<int64_t, int64_t> WindowStart(int64_t w) const;
  // The tokens of window w.
  StatusOr<std::vector<int32_t>> ReadWindow(int64_t w) const;
  // The window index at `position` of epoch `epoch`.
  int64_t WindowAt(int64_t epoch, int64_t position);

  // The order in which an epoch visits n windows: a permutation of [0, n) fixed by (seed, epoch).
  static std::vector<int64_t> EpochOrder(int64_t n, uint64_t seed, int64_t epoch);

 private:
  SequenceSampler() = default;
  const std::vector<int64_t>& Order(int64_t epoch);

  std::shared_ptr<TokenSource> source_;
  SamplerOptions options_;
  int64_t windows_ = 0;
  // documents() + 1 prefix sums: per document its first window (default) or the stream position
  // of its first token (cross_documents), so a window maps back to its document by binary search.
  std::vector<int64_t> doc_start_;
  int64_t epoch_ = 0, position_ = 0;
  // Permutations of the two most recent epochs asked for (a batch may straddle two).
  struct CachedOrder {
    int64_t epoch = -1;
    std::vector<int64_t> order;
  };
  CachedOrder cache_[2];
  int next_slot_ = 0;
};

}  // namespace indexcache
