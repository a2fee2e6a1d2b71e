// The score tiles of the CUDA indexer top-k, shared by both paths (indexer_topk_main_cuda.cu and
// indexer_topk_split_cuda.cu): a query's q as mma.sync B fragments, the 16-key mma.sync tile, the
// ReLU / weight / head sum (every path sums in this order, so all paths give the same bits), and
// the wgmma geometry and issue helpers of the D = 128, 33..64-head variants.
//
// Include from .cu files only; internal linkage (an unnamed namespace), like kernels/topk_select.cuh.
#pragma once

#include <cstdint>

#include <cuda_bf16.h>

#include "kernels/indexer_topk_cuda_internal.h"
#include "kernels/ptx.cuh"

// wgmma exists only in the sm_90a target (and the host pass); the compute_90 PTX traps instead.
#if !defined(__CUDA_ARCH__) || defined(__CUDA_ARCH_FEAT_SM90_ALL)
#define INDEXER_TOPK_HAS_WGMMA 1
#else
#define INDEXER_TOPK_HAS_WGMMA 0
#endif

namespace indexcache {
namespace indexer_topk {
namespace {

// cp.async, ldmatrix, mma.sync and the wgmma wrappers: kernels/ptx.cuh.
using namespace ptx;

__device__ __forceinline__ int KeyEndOf(const int32_t* key_end, int64_t query_offset, int64_t L, int64_t t) {
  const int64_t end = key_end ? static_cast<int64_t>(key_end[t]) : query_offset + t + 1;
  return static_cast<int>(end < 0 ? 0 : (end > L ? L : end));
}

template <int D>
constexpr int RowBytes() {
  return (D + 8) * 2;  // +16 bytes: ldmatrix rows land in distinct bank groups
}

template <int D>
constexpr int MainStageBytes() {
  return kStages * kTileKeys * RowBytes<D>();
}

// Query t's q as mma.sync B fragments (bq[j][kk][0] = q[8j+g][16kk+2t4 .. +1], [1] the same at
// +8) and its per-head weights times |scale| (wsc[j][c] for head 8j+2t4+c); zeros where the
// query is inactive or the head past H. negate_q flips q's sign (a negative scale).
template <int D, int NT>
__device__ __forceinline__ void LoadQueryFragments(const __nv_bfloat16* q, const float* weights, int64_t t, int H,
                                                   bool active, bool negate_q, float abs_scale, int g, int t4,
                                                   uint32_t (&bq)[NT][D / 16][2], float (&wsc)[NT][2]) {
#pragma unroll
  for (int j = 0; j < NT; ++j) {
    const int head = 8 * j + g;
    const bool hv = active && head < H;
    const uint32_t* qrow = reinterpret_cast<const uint32_t*>(q + (t * H + head) * D);
#pragma unroll
    for (int kk = 0; kk < D / 16; ++kk) {
      uint32_t b0 = hv ? __ldg(qrow + (16 * kk + 2 * t4) / 2) : 0u;
      uint32_t b1 = hv ? __ldg(qrow + (16 * kk + 8 + 2 * t4) / 2) : 0u;
      if (negate_q) {
        b0 ^= 0x80008000u;
        b1 ^= 0x80008000u;
      }
      bq[j][kk][0] = b0;
      bq[j][kk][1] = b1;
    }
#pragma unroll
    for (int c = 0; c < 2; ++c) {
      const int h = 8 * j + 2 * t4 + c;
      wsc[j][c] = (active && h < H) ? weights[t * H + h] * abs_scale : 0.f;
    }
  }
}

// The 16 keys x 8*NT heads logits of one m-tile (ldmatrix address `addr`) against bq.
template <int D, int NT>
__device__ __forceinline__ void MmaKeyTile(uint32_t addr, const uint32_t (&bq)[NT][D / 16][2], float (&acc)[NT][4]) {
#pragma unroll
  for (int j = 0; j < NT; ++j) acc[j][0] = acc[j][1] = acc[j][2] = acc[j][3] = 0.f;
#pragma unroll
  for (int kk = 0; kk < D / 16; ++kk) {
    uint32_t a0, a1, a2, a3;
    LdMatrixX4(addr + kk * 32, a0, a1, a2, a3);
#pragma unroll
    for (int j = 0; j < NT; ++j) MmaBf16(acc[j], a0, a1, a2, a3, bq[j][kk][0], bq[j][kk][1]);
  }
}

// Index scores of the m-tile's keys g (lo) and g + 8 (hi): sum over heads of weight * ReLU, the
// heads of a quad summed with shuffles. acc[j][0..1] hold key g, heads 8j+2t4+{0,1}; [2..3] key
// g + 8. Every caller sums in this order, so all paths give the same bits.
template <int NT>
__device__ __forceinline__ void HeadSum(const float (&acc)[NT][4], const float (&wsc)[NT][2], float* lo, float* hi) {
  float s_lo = 0.f, s_hi = 0.f;
#pragma unroll
  for (int j = 0; j < NT; ++j) {
    s_lo = fmaf(wsc[j][0], fmaxf(acc[j][0], 0.f), s_lo);
    s_lo = fmaf(wsc[j][1], fmaxf(acc[j][1], 0.f), s_lo);
    s_hi = fmaf(wsc[j][0], fmaxf(acc[j][2], 0.f), s_hi);
    s_hi = fmaf(wsc[j][1], fmaxf(acc[j][3], 0.f), s_hi);
  }
  s_lo += __shfl_xor_sync(0xffffffffu, s_lo, 1);
  s_hi += __shfl_xor_sync(0xffffffffu, s_hi, 1);
  s_lo += __shfl_xor_sync(0xffffffffu, s_lo, 2);
  s_hi += __shfl_xor_sync(0xffffffffu, s_hi, 2);
  *lo = s_lo;
  *hi = s_hi;
}


// ---------------------------------------------------------------------------------------------
// wgmma geometry (D = 128, up to 64 heads): a query is the B operand [64 heads x 128] in two
// K-blocks of 64 x 128 bytes, a key tile of 128 keys the A operand in two K-blocks of 128 x 128
// bytes, both with the 128-byte swizzle (16-byte chunk c of row r at ((c & 7) ^ (r & 7)) << 4).
constexpr int kWgD = 128;
constexpr int kWgTileKeys = 128;
constexpr int kWgQBytes = 64 * kWgD * 2;                  // 16384: one query, 2 blocks of 64 x 128 B
[[maybe_unused]] constexpr int kWgQBlock = 64 * 128;                       // 8192
constexpr int kWgStageBytes = kWgTileKeys * kWgD * 2;     // 32768: 2 blocks of 128 x 128 B
[[maybe_unused]] constexpr int kWgStageBlock = kWgTileKeys * 128;          // 16384

#if INDEXER_TOPK_HAS_WGMMA
// S[64 keys x 64 heads] of one query over one key half (8 k-steps), issued and committed.
__device__ __forceinline__ void WgIssue(float (&acc)[32], uint32_t key_base, uint32_t q_base) {
  FenceRegs(acc);
  WgmmaFence();
#pragma unroll
  for (int ks = 0; ks < kWgD / 16; ++ks) {
    const uint64_t da = WgDesc(key_base + (ks >> 2) * kWgStageBlock + (ks & 3) * 32);
    const uint64_t db = WgDesc(q_base + (ks >> 2) * kWgQBlock + (ks & 3) * 32);
    WgmmaM64N64K16(acc, da, db, ks != 0);
  }
  WgmmaCommit();
  FenceRegs(acc);
}
// S[64 keys x 128 (2 queries x 64 heads)] over one key half; q k-blocks are q_kstride apart.
__device__ __forceinline__ void WgIssue2(float (&acc)[64], uint32_t key_base, uint32_t q_base, uint32_t q_kstride) {
  FenceRegs(acc);
  WgmmaFence();
#pragma unroll
  for (int ks = 0; ks < kWgD / 16; ++ks) {
    const uint64_t da = WgDesc(key_base + (ks >> 2) * kWgStageBlock + (ks & 3) * 32);
    const uint64_t db = WgDesc(q_base + (ks >> 2) * q_kstride + (ks & 3) * 32);
    WgmmaM64N128K16(acc, da, db, ks != 0);
  }
  WgmmaCommit();
  FenceRegs(acc);
}
#endif

}  // namespace
}  // namespace indexer_topk
}  // namespace indexcache
