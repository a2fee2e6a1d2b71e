#include "model/lm_loss.h"

#include <algorithm>
#include <cmath>

namespace indexcache {

LossSum NextTokenLoss(const Tensor& logits, const std::vector<int32_t>& tokens) {
  IC_CHECK(logits.dtype() == DType::kF32 && logits.dim() == 2);
  const int64_t T = logits.size(0), V = logits.size(1);
  IC_CHECK(static_cast<int64_t>(tokens.size()) == T);
  LossSum sum;
  for (int64_t t = 0; t + 1 < T; ++t) {
    const float* row = logits.data<float>() + t * V;
    const double mx = *std::max_element(row, row + V);
    double s = 0.0;
    for (int64_t v = 0; v < V; ++v) s += std::exp(static_cast<double>(row[v]) - mx);
    sum.nll += (mx + std::log(s)) - row[tokens[t + 1]];
    ++sum.count;
  }
  return sum;
}

}  // namespace indexcache
