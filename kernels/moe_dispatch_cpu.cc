#include <vector>

#include "kernels/moe_dispatch.h"

namespace indexcache {

// A counting sort: stable by construction.
void MoeGroupByExpertCpu(const int32_t* experts, int64_t n, int64_t E, int32_t* order, int32_t* inverse,
                         int32_t* offsets) {
  for (int64_t e = 0; e <= E; ++e) offsets[e] = 0;
  for (int64_t a = 0; a < n; ++a) ++offsets[experts[a] + 1];
  for (int64_t e = 0; e < E; ++e) offsets[e + 1] += offsets[e];
  std::vector<int32_t> next(offsets, offsets + E);
  for (int64_t a = 0; a < n; ++a) {
    const int32_t pos = next[experts[a]]++;
    order[pos] = static_cast<int32_t>(a);
    inverse[a] = pos;
  }
}

void MoeGatherCpu(const float* x, const int32_t* order, int64_t n, int64_t k, int64_t cols, float* y) {
  for (int64_t i = 0; i < n; ++i) {
    const float* src = x + (order[i] / k) * cols;
    for (int64_t c = 0; c < cols; ++c) y[i * cols + c] = src[c];
  }
}

void MoeCombineCpu(const float* rows, const int32_t* inverse, const float* weights, int64_t T, int64_t k, int64_t cols,
                   float* y) {
  for (int64_t t = 0; t < T; ++t) {
    for (int64_t c = 0; c < cols; ++c) {
      float acc = 0.0f;
      for (int64_t j = 0; j < k; ++j) {
        // volatile: the product is rounded before the add, as the CUDA kernel's __fmul_rn does,
        // whatever contraction flags this file is built with.
        volatile float prod = weights[t * k + j] * rows[static_cast<int64_t>(inverse[t * k + j]) * cols + c];
        acc += prod;
      }
      y[t * cols + c] += acc;
    }
  }
}

}  // namespace indexcache
