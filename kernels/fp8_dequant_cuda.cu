// FP8 e4m3 block dequantisation on the GPU. Purely bandwidth-bound (1 byte read, 2 written per
// element): the vectorised path moves 16 elements per thread with one 16-byte load and two
// 16-byte stores, and converts pairs with the hardware e4m3x2 -> f16x2 instruction (sm_89+;
// exact, as every e4m3 value is an f16 value). The scale multiplication is one fp32 __fmul_rn,
// as in Fp8DequantCpu, so the results are bitwise those of the CPU reference.
#include "kernels/fp8_dequant_cuda.h"

#include <cuda_fp16.h>
#include <cuda_fp8.h>

#include <algorithm>
#include <cstring>

#include "core/cuda_check.h"
#include "core/status.h"
#include "kernels/ptx.cuh"

namespace indexcache {
namespace {

constexpr int kThreads = 256;
constexpr int kVec = 16;  // e4m3 elements per 16-byte load

__device__ __forceinline__ float2 E4m3PairToFloat2(unsigned short pair) {
  // The low byte is the first element (.x), as in memory order on a little-endian device.
  return __half22float2(__half2(__nv_cvt_fp8x2_to_halfraw2(pair, __NV_E4M3)));
}

// One thread per 16-element chunk of a row. The chunk lies inside one scale block because
// block_cols is a multiple of 16. Indices are 32-bit (the dispatcher checks they fit): 64-bit
// division would cost more than the bytes this thread moves.
__global__ void Fp8DequantVec16Kernel(const uint4* __restrict__ q, const float* __restrict__ scale_inv,
                                      uint32_t chunks_per_row, uint32_t num_chunks, uint32_t block_rows,
                                      uint32_t chunks_per_block, uint32_t scale_cols, uint4* __restrict__ out) {
  const uint32_t i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i >= num_chunks) return;
  const uint32_t r = i / chunks_per_row, chunk = i - r * chunks_per_row;
  const float s = scale_inv[(r / block_rows) * scale_cols + chunk / chunks_per_block];
  const uint4 in = q[i];
  const uint32_t words[4] = {in.x, in.y, in.z, in.w};
  uint32_t packed[8];
#pragma unroll
  for (int k = 0; k < 4; ++k) {
    const float2 a = E4m3PairToFloat2(static_cast<unsigned short>(words[k] & 0xffffu));
    const float2 b = E4m3PairToFloat2(static_cast<unsigned short>(words[k] >> 16));
    packed[2 * k] = ptx::PackBf16(__fmul_rn(a.x, s), __fmul_rn(a.y, s));
    packed[2 * k + 1] = ptx::PackBf16(__fmul_rn(b.x, s), __fmul_rn(b.y, s));
  }
  out[2 * static_cast<size_t>(i)] = make_uint4(packed[0], packed[1], packed[2], packed[3]);
  out[2 * static_cast<size_t>(i) + 1] = make_uint4(packed[4], packed[5], packed[6], packed[7]);
}

// Any shape: one element per thread, grid-stride. Small and odd-shaped test models only.
__global__ void Fp8DequantScalarKernel(const uint8_t* __restrict__ q, const float* __restrict__ scale_inv,
                                       int64_t rows, int64_t cols, int64_t block_rows, int64_t block_cols,
                                       int64_t scale_cols, __nv_bfloat16* __restrict__ out) {
  const int64_t n = rows * cols;
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t r = i / cols, c = i - r * cols;
    const float v = __half2float(__half(__nv_cvt_fp8_to_halfraw(q[i], __NV_E4M3)));
    out[i] = __float2bfloat16_rn(__fmul_rn(v, scale_inv[(r / block_rows) * scale_cols + c / block_cols]));
  }
}

bool Aligned16(const void* p) { return reinterpret_cast<uintptr_t>(p) % 16 == 0; }

}  // namespace

void Fp8DequantCuda(const uint8_t* q, const float* scale_inv, const Fp8BlockLayout& l, __nv_bfloat16* out,
                    cudaStream_t stream) {
  IC_CHECK(l.rows > 0 && l.cols > 0 && l.block_rows > 0 && l.block_cols > 0);
  const int64_t chunks = l.numel() / kVec;
  const bool vec = l.cols % kVec == 0 && l.block_cols % kVec == 0 && Aligned16(q) && Aligned16(out) &&
                   chunks < (int64_t{1} << 32) - kThreads && l.block_rows < (int64_t{1} << 32) &&
                   l.scale_rows() * l.scale_cols() < (int64_t{1} << 32);
  if (vec) {
    const int64_t blocks = (chunks + kThreads - 1) / kThreads;
    Fp8DequantVec16Kernel<<<static_cast<unsigned>(blocks), kThreads, 0, stream>>>(
        reinterpret_cast<const uint4*>(q), scale_inv, static_cast<uint32_t>(l.cols / kVec),
        static_cast<uint32_t>(chunks), static_cast<uint32_t>(l.block_rows), static_cast<uint32_t>(l.block_cols / kVec),
        static_cast<uint32_t>(l.scale_cols()), reinterpret_cast<uint4*>(out));
  } else {
    const int64_t blocks = std::min<int64_t>((l.numel() + kThreads - 1) / kThreads, int64_t{1} << 20);
    Fp8DequantScalarKernel<<<static_cast<unsigned>(blocks), kThreads, 0, stream>>>(
        q, scale_inv, l.rows, l.cols, l.block_rows, l.block_cols, l.scale_cols(), out);
  }
  CUDA_CHECK(cudaGetLastError());
}

}  // namespace indexcache
