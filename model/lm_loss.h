// Language-model loss: next-token cross-entropy of logits against the tokens that follow.
#pragma once

#include <cstdint>
#include <vector>

#include "core/tensor.h"

namespace indexcache {

struct LossSum {
  double nll = 0.0;     // summed negative log-likelihood (nats)
  int64_t count = 0;    // predicted tokens
  void Add(const LossSum& o) { nll += o.nll; count += o.count; }
  double mean() const { return count ? nll / count : 0.0; }
};

// logits [T, V] for tokens[0..T): position t predicts tokens[t + 1]; T - 1 predictions.
// Computed in fp64 with a max-shifted log-sum-exp.
LossSum NextTokenLoss(const Tensor& logits, const std::vector<int32_t>& tokens);

// The sum of per-token losses (ForwardResult::token_nll), added in order.
LossSum SumLosses(const std::vector<double>& token_nll);

}  // namespace indexcache
