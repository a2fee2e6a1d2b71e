// RMSNorm on the GPU: one thread block per row, 16-byte vector loads when dim and the pointers
// allow, fp32 accumulation. The row is read twice (sum of squares, then scale); the second read
// hits L1/L2 because the block has just read the same bytes.
#include "kernels/norms_cuda.h"

#include <cstdint>

#include "core/cuda_check.h"

namespace indexcache {
namespace {

__device__ __forceinline__ float ToFloat(float v) { return v; }
__device__ __forceinline__ float ToFloat(__nv_bfloat16 v) { return __bfloat162float(v); }
template <typename T>
__device__ __forceinline__ T FromFloat(float v);
template <>
__device__ __forceinline__ float FromFloat<float>(float v) { return v; }
template <>
__device__ __forceinline__ __nv_bfloat16 FromFloat<__nv_bfloat16>(float v) { return __float2bfloat16_rn(v); }

// kVec elements loaded and stored as one access (16 bytes when kVec * sizeof(T) == 16).
template <typename T, int kVec>
struct alignas(sizeof(T) * kVec) Pack {
  T v[kVec];
};

// Sum over the block; every thread gets the result. blockDim.x is a multiple of 32.
__device__ float BlockSum(float v) {
  __shared__ float warp_sums[32];
  __shared__ float total;
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  if (lane == 0) warp_sums[warp] = v;
  __syncthreads();
  if (warp == 0) {
    v = lane < blockDim.x / 32 ? warp_sums[lane] : 0.f;
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    if (lane == 0) total = v;
  }
  __syncthreads();
  return total;
}

// No __restrict__ on x/out: in-place use is allowed. It is safe because every read of the first
// pass finishes before BlockSum's barrier, and in the second pass each thread reads an element
// before it writes it.
template <typename T, int kVec>
__global__ void RmsNormKernel(const T* x, const T* __restrict__ weight, int64_t dim, float eps, T* out) {
  using P = Pack<T, kVec>;
  const int64_t nvec = dim / kVec;
  const P* xr = reinterpret_cast<const P*>(x + blockIdx.x * dim);
  const P* wr = reinterpret_cast<const P*>(weight);
  P* yr = reinterpret_cast<P*>(out + blockIdx.x * dim);

  float sum = 0.f;
  for (int64_t i = threadIdx.x; i < nvec; i += blockDim.x) {
    const P p = xr[i];
#pragma unroll
    for (int k = 0; k < kVec; ++k) sum += ToFloat(p.v[k]) * ToFloat(p.v[k]);
  }
  // Same expression as RmsNormCpu: 1 / sqrt(mean + eps).
  const float inv = rsqrtf(BlockSum(sum) / static_cast<float>(dim) + eps);

  for (int64_t i = threadIdx.x; i < nvec; i += blockDim.x) {
    const P p = xr[i], w = wr[i];
    P y;
#pragma unroll
    for (int k = 0; k < kVec; ++k) y.v[k] = FromFloat<T>(ToFloat(w.v[k]) * (ToFloat(p.v[k]) * inv));
    yr[i] = y;
  }
}

bool Aligned16(const void* p) { return reinterpret_cast<uintptr_t>(p) % 16 == 0; }

template <typename T, int kVec>
void Launch(const T* x, const T* weight, int64_t rows, int64_t dim, float eps, T* out, cudaStream_t stream) {
  // One access per thread when the row fits in a block (rows of up to 8192 bf16 / 4096 fp32 with
  // 16-byte packs), looping otherwise; whole warps, for BlockSum.
  const int64_t nvec = dim / kVec;
  const int threads = static_cast<int>(nvec >= 1024 ? 1024 : (nvec + 31) / 32 * 32);
  constexpr int64_t kMaxGrid = 0x7fffffff;  // gridDim.x limit
  for (int64_t r0 = 0; r0 < rows; r0 += kMaxGrid) {
    const unsigned n = static_cast<unsigned>(rows - r0 < kMaxGrid ? rows - r0 : kMaxGrid);
    RmsNormKernel<T, kVec><<<n, threads, 0, stream>>>(x + r0 * dim, weight, dim, eps, out + r0 * dim);
    CUDA_CHECK(cudaGetLastError());
  }
}

}  // namespace

template <typename T>
void RmsNormCuda(const T* x, const T* weight, int64_t rows, int64_t dim, float eps, T* out,
                 cudaStream_t stream) {
  if (rows <= 0 || dim <= 0) return;
  constexpr int kVec = 16 / sizeof(T);
  // Every row start stays 16-byte aligned iff dim is a multiple of kVec and the bases are aligned.
  if (dim % kVec == 0 && Aligned16(x) && Aligned16(weight) && Aligned16(out)) {
    Launch<T, kVec>(x, weight, rows, dim, eps, out, stream);
  } else {
    Launch<T, 1>(x, weight, rows, dim, eps, out, stream);
  }
}

template void RmsNormCuda<float>(const float*, const float*, int64_t, int64_t, float, float*, cudaStream_t);
template void RmsNormCuda<__nv_bfloat16>(const __nv_bfloat16*, const __nv_bfloat16*, int64_t, int64_t, float,
                                         __nv_bfloat16*, cudaStream_t);

}  // namespace indexcache
