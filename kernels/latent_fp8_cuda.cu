// FP8 latent cache kernels: one warp per row. A 128-value block is 4 values per lane, so the
// block's amax is one warp max-reduction and every lane reads or writes one 4-byte word of e4m3.
// The division and the scale follow the CPU reference's operations exactly (IEEE division,
// saturating round-to-nearest-even conversion), which is what makes the two bit-identical.
#include "kernels/latent_fp8_cuda.h"

#include <algorithm>
#include <cstdint>

#include <cuda_fp8.h>

#include "core/cuda_check.h"

namespace indexcache {

namespace {

constexpr int kWarpsPerBlock = 8;
constexpr int kBlock = static_cast<int>(LatentFp8Layout::kBlock);

struct RowGeometry {  // LatentFp8Layout's offsets as kernel arguments (ints: rows are small)
  int blocks, rope, dim, scale_offset, rope_offset, row_bytes;
};

RowGeometry Geometry(const LatentFp8Layout& l) {
  return {static_cast<int>(l.blocks()),       static_cast<int>(l.rope),         static_cast<int>(l.dim()),
          static_cast<int>(l.scale_offset()), static_cast<int>(l.rope_offset()), static_cast<int>(l.row_bytes())};
}

__global__ void QuantizeLatentRowsKernel(const __nv_bfloat16* src, const int32_t* rows, int64_t n, RowGeometry g,
                                         uint8_t* cache) {
  const int lane = threadIdx.x & 31;
  const int64_t warps = int64_t(gridDim.x) * kWarpsPerBlock;
  for (int64_t i = int64_t(blockIdx.x) * kWarpsPerBlock + (threadIdx.x >> 5); i < n; i += warps) {
    const __nv_bfloat16* x = src + i * g.dim;
    uint8_t* row = cache + int64_t(rows[i]) * g.row_bytes;
    for (int b = 0; b < g.blocks; ++b) {
      float v[4];
      float amax = 0.0f;
      for (int j = 0; j < 4; ++j) {
        v[j] = __bfloat162float(x[b * kBlock + lane * 4 + j]);
        amax = fmaxf(amax, fabsf(v[j]));
      }
      for (int off = 16; off > 0; off >>= 1) amax = fmaxf(amax, __shfl_xor_sync(0xffffffffu, amax, off));
      const float scale = LatentFp8Scale(amax);  // the CPU's function (IEEE division, bit operations)
      uint32_t word = 0;
      for (int j = 0; j < 4; ++j) {
        const __nv_fp8_storage_t q = __nv_cvt_float_to_fp8(__fdiv_rn(v[j], scale), __NV_SATFINITE, __NV_E4M3);
        word |= uint32_t(q) << (8 * j);
      }
      reinterpret_cast<uint32_t*>(row + b * kBlock)[lane] = word;
      if (lane == 0) reinterpret_cast<float*>(row + g.scale_offset)[b] = scale;
    }
    __nv_bfloat16* rope = reinterpret_cast<__nv_bfloat16*>(row + g.rope_offset);
    for (int j = lane; j < g.rope; j += 32) rope[j] = x[(g.dim - g.rope) + j];
  }
}

__global__ void DequantizeLatentRowsKernel(const uint8_t* cache, const int32_t* indices, int64_t n, RowGeometry g,
                                           __nv_bfloat16* out) {
  const int lane = threadIdx.x & 31;
  const int64_t warps = int64_t(gridDim.x) * kWarpsPerBlock;
  for (int64_t i = int64_t(blockIdx.x) * kWarpsPerBlock + (threadIdx.x >> 5); i < n; i += warps) {
    __nv_bfloat162* y = reinterpret_cast<__nv_bfloat162*>(out + i * g.dim);  // dim is even
    const int32_t r = indices[i];
    if (r < 0) {
      for (int j = lane; j < g.dim / 2; j += 32) y[j] = __floats2bfloat162_rn(0.0f, 0.0f);
      continue;
    }
    const uint8_t* row = cache + int64_t(r) * g.row_bytes;
    for (int b = 0; b < g.blocks; ++b) {
      const float scale = reinterpret_cast<const float*>(row + g.scale_offset)[b];
      const uint32_t word = reinterpret_cast<const uint32_t*>(row + b * kBlock)[lane];
      float v[4];
      for (int j = 0; j < 4; ++j) {
        const __half_raw h = __nv_cvt_fp8_to_halfraw(static_cast<__nv_fp8_storage_t>(word >> (8 * j)), __NV_E4M3);
        v[j] = __half2float(__half(h)) * scale;  // e4m3 -> f16 is exact
      }
      y[(b * kBlock) / 2 + lane * 2] = __floats2bfloat162_rn(v[0], v[1]);
      y[(b * kBlock) / 2 + lane * 2 + 1] = __floats2bfloat162_rn(v[2], v[3]);
    }
    const __nv_bfloat162* rope = reinterpret_cast<const __nv_bfloat162*>(row + g.rope_offset);
    for (int j = lane; j < g.rope / 2; j += 32) y[(g.dim - g.rope) / 2 + j] = rope[j];
  }
}

// The same gather with 16-byte words (rows whose sizes and offsets are multiples of 16 bytes, e.g.
// V3.2's 656-byte rows into 1152-byte bf16 rows): a lane moves 16 e4m3 values (one load, two 16-byte
// stores) instead of 4, so a warp has a whole 512-value row in flight at once. The arithmetic per
// value is the narrow kernel's, so the bits are the same.
__global__ void DequantizeLatentRowsWideKernel(const uint8_t* cache, const int32_t* indices, int64_t n, RowGeometry g,
                                               __nv_bfloat16* out) {
  const int lane = threadIdx.x & 31;
  const int64_t warps = int64_t(gridDim.x) * kWarpsPerBlock;
  const int nope_words = (g.dim - g.rope) / 16, rope_words = g.rope / 8, out_words = g.dim / 8;
  for (int64_t i = int64_t(blockIdx.x) * kWarpsPerBlock + (threadIdx.x >> 5); i < n; i += warps) {
    uint4* y = reinterpret_cast<uint4*>(out + i * g.dim);
    const int32_t r = indices[i];
    if (r < 0) {
      for (int j = lane; j < out_words; j += 32) y[j] = make_uint4(0, 0, 0, 0);
      continue;
    }
    const uint8_t* row = cache + int64_t(r) * g.row_bytes;
    for (int c = lane; c < nope_words; c += 32) {
      const uint4 word = reinterpret_cast<const uint4*>(row)[c];
      const float scale = reinterpret_cast<const float*>(row + g.scale_offset)[(c * 16) / kBlock];
      const uint32_t parts[4] = {word.x, word.y, word.z, word.w};
      uint32_t packed[8];
      for (int p = 0; p < 4; ++p) {
        for (int h = 0; h < 2; ++h) {
          const __half2_raw pair = __nv_cvt_fp8x2_to_halfraw2(
              static_cast<__nv_fp8x2_storage_t>(parts[p] >> (16 * h)), __NV_E4M3);
          const float2 f = __half22float2(__half2(pair));
          const __nv_bfloat162 b = __floats2bfloat162_rn(f.x * scale, f.y * scale);
          packed[2 * p + h] = *reinterpret_cast<const uint32_t*>(&b);
        }
      }
      y[2 * c] = make_uint4(packed[0], packed[1], packed[2], packed[3]);
      y[2 * c + 1] = make_uint4(packed[4], packed[5], packed[6], packed[7]);
    }
    const uint4* rope = reinterpret_cast<const uint4*>(row + g.rope_offset);
    for (int j = lane; j < rope_words; j += 32) y[2 * nope_words + j] = rope[j];
  }
}

__global__ void CompactIndicesKernel(int64_t total, int32_t* indices) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < total; i += int64_t(gridDim.x) * blockDim.x) {
    if (indices[i] >= 0) indices[i] = static_cast<int32_t>(i);
  }
}

int RowBlocks(int64_t n) { return static_cast<int>(std::min<int64_t>((n + kWarpsPerBlock - 1) / kWarpsPerBlock, 1 << 16)); }

}  // namespace

void QuantizeLatentRowsCuda(const __nv_bfloat16* src, const int32_t* rows, int64_t n, const LatentFp8Layout& layout,
                            uint8_t* cache, cudaStream_t stream) {
  if (n <= 0) return;
  QuantizeLatentRowsKernel<<<RowBlocks(n), kWarpsPerBlock * 32, 0, stream>>>(src, rows, n, Geometry(layout), cache);
  CUDA_CHECK(cudaGetLastError());
}

void DequantizeLatentRowsCuda(const uint8_t* cache, const int32_t* indices, int64_t n, const LatentFp8Layout& layout,
                              __nv_bfloat16* out, cudaStream_t stream) {
  if (n <= 0) return;
  const bool wide = layout.row_bytes() % 16 == 0 && layout.rope_offset() % 16 == 0 && layout.rope % 8 == 0 &&
                    reinterpret_cast<uintptr_t>(cache) % 16 == 0 && reinterpret_cast<uintptr_t>(out) % 16 == 0;
  if (wide) {
    DequantizeLatentRowsWideKernel<<<RowBlocks(n), kWarpsPerBlock * 32, 0, stream>>>(cache, indices, n,
                                                                                     Geometry(layout), out);
  } else {
    DequantizeLatentRowsKernel<<<RowBlocks(n), kWarpsPerBlock * 32, 0, stream>>>(cache, indices, n, Geometry(layout),
                                                                                 out);
  }
  CUDA_CHECK(cudaGetLastError());
}

void CompactIndicesCuda(int64_t T, int64_t k, int32_t* indices, cudaStream_t stream) {
  if (T <= 0 || k <= 0) return;
  const int blocks = static_cast<int>(std::min<int64_t>((T * k + 255) / 256, 1 << 16));
  CompactIndicesKernel<<<blocks, 256, 0, stream>>>(T * k, indices);
  CUDA_CHECK(cudaGetLastError());
}

}  // namespace indexcache
