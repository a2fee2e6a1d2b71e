// Per-row FP8 e4m3 quantisation on the GPU (mirrors kernels/fp8_quant.h; Fp8QuantRowsCpu is the
// reference, and the codes and scales are bitwise equal to it). Quantises the lightning indexer's
// bf16 q (rows of D per (token, head)) and k (rows of D per key token) for the FP8 indexer path
// (kernels/indexer_topk_cuda.h).
#pragma once

#include <cstdint>

#include <cuda_bf16.h>
#include <cuda_runtime_api.h>

namespace indexcache {

// x [rows, cols] bf16 -> q [rows, cols] e4m3 codes, scale [rows] fp32 (amax / 448, 1 for an
// all-zero row); all device, row-major, contiguous. One warp per row; rows with cols a multiple of
// 8 and 16-byte aligned x / 8-byte aligned q take 16-byte loads. Asynchronous on `stream`; launch
// errors abort through CUDA_CHECK. rows * cols < 2^62.
void Fp8QuantRowsCuda(const __nv_bfloat16* x, int64_t rows, int64_t cols, uint8_t* q, float* scale,
                      cudaStream_t stream);

}  // namespace indexcache
