// Token id arrays from .npy files (int32 or int64, shape [T] or [B, T]).
#pragma once

#include <string>
#include <vector>

#include "core/status.h"
#include "core/tensor.h"

namespace indexcache {

struct TokenArray {
  Shape shape;                 // [T] or [B, T]
  std::vector<int32_t> ids;    // row-major
  int64_t rows() const { return shape.size() == 1 ? 1 : shape[0]; }
  int64_t cols() const { return shape.back(); }
  std::vector<int32_t> Row(int64_t r) const {
    return std::vector<int32_t>(ids.begin() + r * cols(), ids.begin() + (r + 1) * cols());
  }
};

// Reads and checks a token array; ids must lie in [0, vocab_size) (vocab_size <= 0: unchecked).
// Errors name the file and, for a bad id, its position.
StatusOr<TokenArray> ReadTokenArray(const std::string& path, int64_t vocab_size, bool allow_2d = true);

}  // namespace indexcache
