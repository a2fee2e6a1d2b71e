#include "kernels/fp8_dequant.h"

#include "core/dtype.h"

namespace indexcache {

StatusOr<Fp8BlockLayout> Fp8BlockLayoutOf(const std::string& tensor, const Shape& weight_shape,
                                          const Shape& scale_shape, int64_t block_rows, int64_t block_cols) {
  const std::string where = "tensor '" + tensor + "'";
  if (weight_shape.size() != 2 || weight_shape[0] < 1 || weight_shape[1] < 1) {
    return InvalidArgument(where + ": FP8 block dequantisation needs a non-empty 2-D matrix, got shape " +
                           ShapeToString(weight_shape));
  }
  if (block_rows < 1 || block_cols < 1) {
    return InvalidArgument(where + ": FP8 block size " + std::to_string(block_rows) + " x " +
                           std::to_string(block_cols) + " must be positive (quantization_config.weight_block_size)");
  }
  Fp8BlockLayout layout;
  layout.rows = weight_shape[0];
  layout.cols = weight_shape[1];
  layout.block_rows = block_rows;
  layout.block_cols = block_cols;
  const Shape want = {layout.scale_rows(), layout.scale_cols()};
  if (scale_shape != want) {
    return InvalidArgument(where + ": block scales have shape " + ShapeToString(scale_shape) + ", expected " +
                           ShapeToString(want) + " for " + ShapeToString(weight_shape) + " in blocks of " +
                           std::to_string(block_rows) + " x " + std::to_string(block_cols));
  }
  return layout;
}

void Fp8DequantCpu(const uint8_t* q, const float* scale_inv, const Fp8BlockLayout& l, float* out) {
  float table[256];
  for (int b = 0; b < 256; ++b) table[b] = Fp8E4M3ToFloat(static_cast<uint8_t>(b));
  const int64_t scale_cols = l.scale_cols();
#pragma omp parallel for schedule(static) if (l.numel() > (1 << 20))
  for (int64_t r = 0; r < l.rows; ++r) {
    const float* s = scale_inv + (r / l.block_rows) * scale_cols;
    const uint8_t* qr = q + r * l.cols;
    float* o = out + r * l.cols;
    for (int64_t c = 0; c < l.cols; ++c) o[c] = table[qr[c]] * s[c / l.block_cols];
  }
}

}  // namespace indexcache
