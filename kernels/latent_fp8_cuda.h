// kernels/latent_fp8.h on CUDA: the FP8 latent cache's quantising scatter and dequantising gather,
// on bf16 activations. Bit-identical to the CPU references on the same (bf16) values;
// kernels/latent_fp8_cuda_test.cc checks that. All pointers are device pointers; launches are
// asynchronous on `stream`. The cache and rows need 4-byte alignment (the layout guarantees its
// row size; cudaMalloc its base).
#pragma once

#include <cstdint>

#include <cuda_bf16.h>
#include <cuda_runtime_api.h>

#include "kernels/latent_fp8.h"

namespace indexcache {

// cache[rows[i], :] = Quantise(src[i, :]), src [n, layout.dim()] bf16.
void QuantizeLatentRowsCuda(const __nv_bfloat16* src, const int32_t* rows, int64_t n, const LatentFp8Layout& layout,
                            uint8_t* cache, cudaStream_t stream);

// out[i, :] = Dequantise(cache[indices[i], :]) (zeros for indices[i] < 0), out [n, layout.dim()] bf16.
// The dequantised fp32 values round to bf16 (the rope part is bf16 already).
void DequantizeLatentRowsCuda(const uint8_t* cache, const int32_t* indices, int64_t n, const LatentFp8Layout& layout,
                              __nv_bfloat16* out, cudaStream_t stream);

// indices [T, k]: entry (t, j) >= 0 becomes t * k + j; -1 stays.
void CompactIndicesCuda(int64_t T, int64_t k, int32_t* indices, cudaStream_t stream);

}  // namespace indexcache
