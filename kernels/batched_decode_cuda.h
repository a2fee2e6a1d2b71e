// kernels/batched_decode.h on CUDA: the pooled cache's row scatter and the per-request index offset
// of a batched decode step. All pointers are device pointers; launches are asynchronous on
// `stream`. kernels/batched_decode_cuda_test.cc compares both with the CPU references.
#pragma once

#include <cstdint>

#include <cuda_runtime_api.h>

namespace indexcache {

// dst[rows[i], :] = src[i, :] for i in [0, n), rows of `row_bytes` bytes (16-byte rows, pointers
// and row_bytes aligned to 16 copy as 16-byte words, anything else byte by byte).
void ScatterRowsCuda(const void* src, const int32_t* rows, int64_t n, int64_t row_bytes, void* dst,
                     cudaStream_t stream);

// indices[t, j] += offsets[t] wherever indices[t, j] >= 0; the -1 padding stays -1.
void OffsetIndicesCuda(const int32_t* offsets, int64_t T, int64_t k, int32_t* indices, cudaStream_t stream);

}  // namespace indexcache
