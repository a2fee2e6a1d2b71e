#include "data/token_array.h"

#include "core/npy.h"

namespace indexcache {

StatusOr<TokenArray> ReadTokenArray(const std::string& path, int64_t vocab_size, bool allow_2d) {
  ASSIGN_OR_RETURN(Tensor t, ReadNpy(path));
  if (t.dtype() != DType::kI32 && t.dtype() != DType::kI64) {
    return InvalidArgument(path + ": token ids must be int32 or int64, got " + DTypeName(t.dtype()));
  }
  if (t.dim() != 1 && !(allow_2d && t.dim() == 2)) {
    return InvalidArgument(path + ": token ids must have shape [T]" + std::string(allow_2d ? " or [B, T]" : "") +
                           ", got " + ShapeToString(t.shape()));
  }
  if (t.numel() == 0) return InvalidArgument(path + ": no tokens");
  TokenArray out;
  out.shape = t.shape();
  out.ids.resize(t.numel());
  const int64_t cols = t.shape().back();
  for (int64_t i = 0; i < t.numel(); ++i) {
    const int64_t id = t.dtype() == DType::kI32 ? t.data<int32_t>()[i] : t.data<int64_t>()[i];
    if (vocab_size > 0 && (id < 0 || id >= vocab_size)) {
      const std::string where = t.dim() == 1 ? "position " + std::to_string(i)
                                             : "[" + std::to_string(i / cols) + ", " + std::to_string(i % cols) + "]";
      return InvalidArgument(path + ": token id " + std::to_string(id) + " at " + where +
                             " is outside the vocabulary [0, " + std::to_string(vocab_size) + ")");
    }
    out.ids[i] = static_cast<int32_t>(id);
  }
  return out;
}

}  // namespace indexcache
