#include "kernels/cross_entropy.h"

#include <algorithm>
#include <cmath>

namespace indexcache {

void CrossEntropyRowsCpu(const float* logits, const int32_t* targets, int64_t rows, int64_t vocab, double* nll) {
  for (int64_t r = 0; r < rows; ++r) {
    const float* row = logits + r * vocab;
    const double mx = *std::max_element(row, row + vocab);
    double s = 0.0;
    for (int64_t v = 0; v < vocab; ++v) s += std::exp(static_cast<double>(row[v]) - mx);
    nll[r] = (mx + std::log(s)) - static_cast<double>(row[targets[r]]);
  }
}

}  // namespace indexcache
