#include "eval/position_loss.h"

#include <string>

namespace indexcache {

StatusOr<PositionLoss> PositionLoss::Create(int64_t bucket, int64_t seq_len) {
  if (bucket < 1) return InvalidArgument("--bucket must be at least 1, got " + std::to_string(bucket));
  if (seq_len < 2) return InvalidArgument("--seq-len must be at least 2");
  const int64_t predictions = seq_len - 1;
  const int64_t n = (predictions + bucket - 1) / bucket;
  if (n > kMaxBuckets) {
    return InvalidArgument("--bucket " + std::to_string(bucket) + " cuts --seq-len " + std::to_string(seq_len) +
                           " into " + std::to_string(n) + " buckets; at most " + std::to_string(kMaxBuckets));
  }
  PositionLoss p;
  p.bucket_ = bucket;
  p.sum_.assign(n, 0.0);
  p.count_.assign(n, 0);
  return p;
}

void PositionLoss::Add(const std::vector<double>& token_nll) {
  const int64_t n = static_cast<int64_t>(token_nll.size());
  for (int64_t t = 0; t < n; ++t) {
    const int64_t b = t / bucket_;
    if (b >= buckets()) break;  // a longer window than Create was told: ignore its tail, never overrun
    sum_[b] += token_nll[t];
    count_[b] += 1;
  }
}

void PositionLoss::Merge(const PositionLoss& other) {
  for (int64_t b = 0; b < buckets() && b < other.buckets(); ++b) {
    sum_[b] += other.sum_[b];
    count_[b] += other.count_[b];
  }
}

}  // namespace indexcache
