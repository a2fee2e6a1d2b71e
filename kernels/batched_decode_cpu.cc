#include "kernels/batched_decode.h"

#include <cstring>

namespace indexcache {

void ScatterRowsCpu(const void* src, const int32_t* rows, int64_t n, int64_t row_bytes, void* dst) {
  for (int64_t i = 0; i < n; ++i) {
    std::memcpy(static_cast<char*>(dst) + int64_t{rows[i]} * row_bytes, static_cast<const char*>(src) + i * row_bytes,
                static_cast<size_t>(row_bytes));
  }
}

void OffsetIndicesCpu(const int32_t* offsets, int64_t T, int64_t k, int32_t* indices) {
  for (int64_t t = 0; t < T; ++t) {
    for (int64_t j = 0; j < k; ++j) {
      int32_t& v = indices[t * k + j];
      if (v >= 0) v += offsets[t];
    }
  }
}

}  // namespace indexcache
