#include "kernels/batched_decode_cuda.h"

#include <algorithm>
#include <cstdint>

#include "core/cuda_check.h"

namespace indexcache {

namespace {

constexpr int kThreads = 256;

// One block per source row (grid-stride over rows), threads over the row's words.
template <typename Word>
__global__ void ScatterRowsKernel(const Word* src, const int32_t* rows, int64_t n, int64_t row_words, Word* dst) {
  for (int64_t i = blockIdx.x; i < n; i += gridDim.x) {
    const Word* s = src + i * row_words;
    Word* d = dst + int64_t(rows[i]) * row_words;
    for (int64_t w = threadIdx.x; w < row_words; w += blockDim.x) d[w] = s[w];
  }
}

__global__ void OffsetIndicesKernel(const int32_t* offsets, int64_t T, int64_t k, int32_t* indices) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < T * k; i += int64_t(gridDim.x) * blockDim.x) {
    const int32_t v = indices[i];
    if (v >= 0) indices[i] = v + offsets[i / k];
  }
}

}  // namespace

void ScatterRowsCuda(const void* src, const int32_t* rows, int64_t n, int64_t row_bytes, void* dst,
                     cudaStream_t stream) {
  if (n <= 0 || row_bytes <= 0) return;
  const int blocks = static_cast<int>(std::min<int64_t>(n, 1 << 16));
  const bool wide = row_bytes % 16 == 0 && reinterpret_cast<uintptr_t>(src) % 16 == 0 &&
                    reinterpret_cast<uintptr_t>(dst) % 16 == 0;
  if (wide) {
    ScatterRowsKernel<uint4><<<blocks, kThreads, 0, stream>>>(static_cast<const uint4*>(src), rows, n, row_bytes / 16,
                                                              static_cast<uint4*>(dst));
  } else {
    ScatterRowsKernel<uint8_t><<<blocks, kThreads, 0, stream>>>(static_cast<const uint8_t*>(src), rows, n, row_bytes,
                                                                static_cast<uint8_t*>(dst));
  }
  CUDA_CHECK(cudaGetLastError());
}

void OffsetIndicesCuda(const int32_t* offsets, int64_t T, int64_t k, int32_t* indices, cudaStream_t stream) {
  if (T <= 0 || k <= 0) return;
  const int blocks = static_cast<int>(std::min<int64_t>((T * k + kThreads - 1) / kThreads, 1 << 16));
  OffsetIndicesKernel<<<blocks, kThreads, 0, stream>>>(offsets, T, k, indices);
  CUDA_CHECK(cudaGetLastError());
}

}  // namespace indexcache
