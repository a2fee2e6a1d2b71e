// FP8 e4m3 block dequantisation on the GPU (mirrors kernels/fp8_dequant.h; Fp8DequantCpu is the
// reference). The CUDA backend keeps FP8 checkpoint matrices resident as e4m3 bytes plus fp32
// block scales and calls this just before each GEMM that reads one, into a bf16 scratch it owns;
// cuBLAS then multiplies the scratch as it would a resident bf16 weight.
#pragma once

#include <cstdint>

#include <cuda_bf16.h>
#include <cuda_runtime_api.h>

#include "kernels/fp8_dequant.h"

namespace indexcache {

// out[r, c] = bf16_rn(e4m3(q[r, c]) * scale_inv[r / block_rows, c / block_cols]), bitwise equal
// to FloatToBf16 of Fp8DequantCpu's value. q: rows * cols e4m3 bytes, scale_inv:
// scale_rows() x scale_cols() fp32, out: rows * cols bf16; all device, row-major, contiguous.
// `layout` comes from Fp8BlockLayoutOf (validated there). Rows with cols and block_cols multiples
// of 16 and 16-byte aligned q/out take a vectorised path (16 elements per thread); any other
// shape a scalar one. Asynchronous on `stream`; launch errors abort through CUDA_CHECK.
void Fp8DequantCuda(const uint8_t* q, const float* scale_inv, const Fp8BlockLayout& layout, __nv_bfloat16* out,
                    cudaStream_t stream);

}  // namespace indexcache
