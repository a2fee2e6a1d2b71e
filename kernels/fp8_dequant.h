// Dequantisation of FP8 e4m3 block-quantised weight matrices, CPU reference.
//
// DeepSeek-V3.2 / GLM FP8 checkpoints store a matrix [rows, cols] as e4m3 bytes `<name>` plus
// fp32 `<name>_scale_inv` [ceil(rows / block_rows), ceil(cols / block_cols)] (blocks usually
// 128 x 128; the last block row and column may be partial):
//   w[r, c] = e4m3_to_float(q[r, c]) * scale_inv[r / block_rows, c / block_cols]
// computed as one fp32 multiplication (the e4m3 value is exact in fp32), so every consumer (the
// CPU load, the CUDA kernel in kernels/fp8_dequant_cuda.h) gets bitwise the same fp32 value and,
// after round-to-nearest-even, the same bf16.
#pragma once

#include <cstdint>
#include <string>

#include "core/status.h"
#include "core/tensor.h"

namespace indexcache {

struct Fp8BlockLayout {
  int64_t rows = 0, cols = 0;                  // the matrix
  int64_t block_rows = 128, block_cols = 128;  // one scale per block
  int64_t scale_rows() const { return (rows + block_rows - 1) / block_rows; }
  int64_t scale_cols() const { return (cols + block_cols - 1) / block_cols; }
  int64_t numel() const { return rows * cols; }
};

// The layout of `tensor` given its e4m3 shape and its scale tensor's shape, checked before any
// kernel runs: a 2-D non-empty matrix, positive block sizes, and a scale grid of exactly
// [ceil(rows / block_rows), ceil(cols / block_cols)]. Errors are one line naming `tensor`.
StatusOr<Fp8BlockLayout> Fp8BlockLayoutOf(const std::string& tensor, const Shape& weight_shape,
                                          const Shape& scale_shape, int64_t block_rows, int64_t block_cols);

// out[rows, cols] (fp32, row-major) = the dequantised matrix. q: rows * cols e4m3 bytes;
// scale_inv: layout.scale_rows() x layout.scale_cols() fp32. Parallel over rows (OpenMP).
void Fp8DequantCpu(const uint8_t* q, const float* scale_inv, const Fp8BlockLayout& layout, float* out);

}  // namespace indexcache
