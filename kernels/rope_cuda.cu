#include "kernels/rope_cuda.h"

#include <algorithm>

#include "core/cuda_check.h"

namespace indexcache {

namespace {

using bf16 = __nv_bfloat16;

constexpr int kThreads = 256;

int Blocks(int64_t n) { return static_cast<int>(std::min<int64_t>((n + kThreads - 1) / kThreads, 1 << 20)); }

// One thread per (t, h, i) rotation pair; a grid-stride loop, so any n with a bounded grid.
template <typename T_>
__global__ void RopeKernel(const float* cos, const float* sin, int64_t T, int64_t half, bool interleaved,
                           int64_t heads, int64_t row_stride, int64_t head_stride, int64_t offset, T_* x) {
  const int64_t n = T * heads * half;
  for (int64_t idx = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; idx < n; idx += int64_t(gridDim.x) * blockDim.x) {
    const int64_t i = idx % half, h = (idx / half) % heads, t = idx / (half * heads);
    T_* v = x + t * row_stride + h * head_stride + offset;
    const int64_t ia = interleaved ? 2 * i : i, ib = interleaved ? 2 * i + 1 : i + half;
    const float a = static_cast<float>(v[ia]), b = static_cast<float>(v[ib]);
    const float c = cos[t * half + i], s = sin[t * half + i];
    v[ia] = static_cast<T_>(a * c - b * s);
    v[ib] = static_cast<T_>(b * c + a * s);
  }
}

}  // namespace

void RopeCuda(const float* cos, const float* sin, int64_t T, int64_t half, bool interleaved, int64_t heads,
              int64_t row_stride, int64_t head_stride, int64_t offset, bf16* x, cudaStream_t stream) {
  if (T <= 0 || heads <= 0 || half <= 0) return;  // nothing to rotate (an empty grid would be a launch error)
  RopeKernel<bf16><<<Blocks(T * heads * half), kThreads, 0, stream>>>(cos, sin, T, half, interleaved, heads,
                                                                       row_stride, head_stride, offset, x);
  CUDA_CHECK(cudaGetLastError());
}

void RopeCuda(const float* cos, const float* sin, int64_t T, int64_t half, bool interleaved, int64_t heads,
              int64_t row_stride, int64_t head_stride, int64_t offset, float* x, cudaStream_t stream) {
  if (T <= 0 || heads <= 0 || half <= 0) return;  // nothing to rotate (an empty grid would be a launch error)
  RopeKernel<float><<<Blocks(T * heads * half), kThreads, 0, stream>>>(cos, sin, T, half, interleaved, heads,
                                                                        row_stride, head_stride, offset, x);
  CUDA_CHECK(cudaGetLastError());
}

}  // namespace indexcache
