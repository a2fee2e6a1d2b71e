// Per-row e4m3 quantisation, one warp per row: the row's amax (warp max), the scale, then every
// value divided by the scale and rounded (cvt.rn.satfinite, what Fp8E4M3Rne does on the CPU).
// The second pass re-reads the row (L1/L2 hits for the rows of D = 128 this serves).
#include "kernels/fp8_quant_cuda.h"

#include <cuda_fp8.h>

#include "core/cuda_check.h"

namespace indexcache {
namespace {

constexpr int kWarpsPerBlock = 8;

__device__ __forceinline__ float RowScale(float amax) {
  const float s = amax / 448.f;  // IEEE division (no fast-math in this build): same bits as the CPU
  return s > 0.f ? s : 1.f;
}

__device__ __forceinline__ uint8_t ToE4M3(float v) {
  return static_cast<uint8_t>(__nv_cvt_float_to_fp8(v, __NV_SATFINITE, __NV_E4M3));
}

template <bool kVec>
__global__ void __launch_bounds__(kWarpsPerBlock * 32) Fp8QuantRowsKernel(const __nv_bfloat16* x, int64_t rows,
                                                                          int64_t cols, uint8_t* q, float* scale) {
  const int lane = threadIdx.x & 31;
  const int64_t row = static_cast<int64_t>(blockIdx.x) * kWarpsPerBlock + (threadIdx.x >> 5);
  if (row >= rows) return;
  const __nv_bfloat16* xr = x + row * cols;
  uint8_t* qr = q + row * cols;
  float amax = 0.f;
  if (kVec) {
    for (int64_t c = lane * 8; c < cols; c += 256) {
      const uint4 v = *reinterpret_cast<const uint4*>(xr + c);
      const __nv_bfloat162* h = reinterpret_cast<const __nv_bfloat162*>(&v);
#pragma unroll
      for (int i = 0; i < 4; ++i) {
        const float2 f = __bfloat1622float2(h[i]);
        amax = fmaxf(amax, fmaxf(fabsf(f.x), fabsf(f.y)));
      }
    }
  } else {
    for (int64_t c = lane; c < cols; c += 32) amax = fmaxf(amax, fabsf(__bfloat162float(xr[c])));
  }
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) amax = fmaxf(amax, __shfl_xor_sync(0xffffffffu, amax, o));
  const float s = RowScale(amax);
  if (kVec) {
    for (int64_t c = lane * 8; c < cols; c += 256) {
      const uint4 v = *reinterpret_cast<const uint4*>(xr + c);
      const __nv_bfloat162* h = reinterpret_cast<const __nv_bfloat162*>(&v);
      uint32_t out[2] = {0u, 0u};
#pragma unroll
      for (int i = 0; i < 4; ++i) {
        const float2 f = __bfloat1622float2(h[i]);
        out[i >> 1] |= (static_cast<uint32_t>(ToE4M3(f.x / s)) | (static_cast<uint32_t>(ToE4M3(f.y / s)) << 8))
                       << (16 * (i & 1));
      }
      *reinterpret_cast<uint2*>(qr + c) = make_uint2(out[0], out[1]);
    }
  } else {
    for (int64_t c = lane; c < cols; c += 32) qr[c] = ToE4M3(__bfloat162float(xr[c]) / s);
  }
  if (lane == 0) scale[row] = s;
}

}  // namespace

void Fp8QuantRowsCuda(const __nv_bfloat16* x, int64_t rows, int64_t cols, uint8_t* q, float* scale,
                      cudaStream_t stream) {
  if (rows <= 0 || cols <= 0) return;
  const bool vec = cols % 8 == 0 && reinterpret_cast<uintptr_t>(x) % 16 == 0 && reinterpret_cast<uintptr_t>(q) % 8 == 0;
  const int64_t blocks = (rows + kWarpsPerBlock - 1) / kWarpsPerBlock;
  CUDA_CHECK(blocks <= 0x7fffffff ? cudaSuccess : cudaErrorInvalidValue);
  if (vec) {
    Fp8QuantRowsKernel<true><<<static_cast<unsigned>(blocks), kWarpsPerBlock * 32, 0, stream>>>(x, rows, cols, q, scale);
  } else {
    Fp8QuantRowsKernel<false><<<static_cast<unsigned>(blocks), kWarpsPerBlock * 32, 0, stream>>>(x, rows, cols, q, scale);
  }
  CUDA_CHECK(cudaGetLastError());
}

}  // namespace indexcache
