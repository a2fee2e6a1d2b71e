#include "model/lm_loss.h"

#include "kernels/cross_entropy.h"

namespace indexcache {

LossSum NextTokenLoss(const Tensor& logits, const std::vector<int32_t>& tokens) {
  IC_CHECK(logits.dtype() == DType::kF32 && logits.dim() == 2);
  const int64_t T = logits.size(0), V = logits.size(1);
  IC_CHECK(static_cast<int64_t>(tokens.size()) == T);
  LossSum sum;
  if (T < 2) return sum;
  std::vector<double> nll(T - 1);
  CrossEntropyRowsCpu(logits.data<float>(), tokens.data() + 1, T - 1, V, nll.data());
  return SumLosses(nll);
}

LossSum SumLosses(const std::vector<double>& token_nll) {
  LossSum sum;
  for (double v : token_nll) sum.nll += v;
  sum.count = static_cast<int64_t>(token_nll.size());
  return sum;
}

}  // namespace indexcache
