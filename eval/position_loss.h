// Loss by position: IndexCache changes which keys a layer attends only once a query has more than
// k = index_topk keys to choose from, so its effect lives at long positions and the mean over all
// tokens hides it. PositionLoss sums next-token losses into buckets of `bucket` positions.
//
// The prediction made at position t (from tokens 0..t of its window, of token t + 1) falls into
// bucket t / bucket; a window of N tokens makes predictions at positions 0..N-2.
#pragma once

#include <cstdint>
#include <vector>

#include "core/status.h"

namespace indexcache {

class PositionLoss {
 public:
  // The most buckets a run may have (bounds --bucket against --seq-len).
  static constexpr int64_t kMaxBuckets = 1 << 16;
  // bucket >= 1 positions per bucket, for windows of seq_len tokens; at most kMaxBuckets buckets.
  static StatusOr<PositionLoss> Create(int64_t bucket, int64_t seq_len);

  // Adds one window's per-token losses (ForwardResult::token_nll: entry t is position t's).
  void Add(const std::vector<double>& token_nll);
  void Merge(const PositionLoss& other);

  int64_t bucket() const { return bucket_; }
  int64_t buckets() const { return static_cast<int64_t>(sum_.size()); }
  int64_t count(int64_t b) const { return count_[b]; }
  double sum(int64_t b) const { return sum_[b]; }
  // Mean loss of bucket b (0 when it holds no prediction).
  double mean(int64_t b) const { return count_[b] ? sum_[b] / count_[b] : 0.0; }

 private:
  int64_t bucket_ = 1;
  std::vector<double> sum_;
  std::vector<int64_t> count_;
};

}  // namespace indexcache
