// The fused distillation-loss kernel's shared pieces (kernels/distill_loss_cuda.cu): its launch
// constants, the warp-level mma.sync product, the shared-memory plan, the kernel parameters, the
// tile loaders and the per-CTA context the phases share. Included by distill_loss_cuda.cu only:
// the anonymous namespace keeps every function internal to that one translation unit, as when
// this code lived there (ptxas then picks the calling convention of the non-inlined phases).
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>

#include <cuda_bf16.h>

#include "kernels/distill_loss_cuda.h"
#include "kernels/distill_teacher_wgmma.cuh"
#include "kernels/ptx.cuh"

namespace indexcache {
namespace {

constexpr int kWarps = 8;
constexpr int kThreads = kWarps * 32;
constexpr int kKT = 32;               // keys per tile of the mma.sync teacher
constexpr int kSKT = 64;              // keys per tile of the student (half the barriers per key of 32)
constexpr int kCoefStride = kSKT + 8; // bf16 elements per coef row (padded for ldmatrix)
constexpr int kMaxRows = 128;         // HA, HI <= 128: at most 8 row groups of 16, one per warp
constexpr int kGwParts = kWarps;      // grad_w partial rows (tiled student: one per 16-key quarter; warp-keys: per warp)
constexpr int kKeysPerWarp = kSKT / kWarps;  // warp-keys student: each warp owns 8 keys of a tile
constexpr int kMaxGqItems = 8;        // warp-keys student: grad_q register tiles (16 x 16) per warp
constexpr float kLog2e = 1.4426950408889634f;

inline int64_t RoundUp(int64_t x, int64_t m) { return (x + m - 1) / m * m; }

// ---------------------------------------------------------------------------------------------
// Device helpers.

// cp.async, ldmatrix and mma.sync wrappers: kernels/ptx.cuh (LdMatrixX4Ptr is the generic-pointer,
// optionally transposed ldmatrix this file used to call LdMatrixX4).
using namespace ptx;

// Warp-level acc[NT][4] += A[m0 : m0+16, 0:kd] * B[n0 : n0+8*NT, 0:kd]^T (NT even, kd % 16 == 0).
// A is stored [m][k] (kTA = false) or [k][m] (kTA = true) with leading dimension lda; B is stored
// [n][k] (kTB = false) or [k][n] (kTB = true). Fragment layout of acc: rows lane/4 (+8),
// columns 2 * (lane % 4) (+1) of each 8-wide n tile.
template <int NT, bool kTA, bool kTB>
__device__ __forceinline__ void WarpMma(float (&acc)[NT][4], const __nv_bfloat16* A, int lda, int m0,
                                        const __nv_bfloat16* B, int ldb, int n0, int kd) {
  const int lane = threadIdx.x & 31, mi = lane >> 3, r = lane & 7;
  for (int k0 = 0; k0 < kd; k0 += 16) {
    uint32_t a0, a1, a2, a3;
    if (!kTA) {
      LdMatrixX4Ptr<false>(A + (m0 + (lane & 15)) * lda + k0 + (lane >> 4) * 8, a0, a1, a2, a3);
    } else {
      LdMatrixX4Ptr<true>(A + (k0 + r + (mi >= 2 ? 8 : 0)) * lda + m0 + (mi & 1) * 8, a0, a1, a2, a3);
    }
#pragma unroll
    for (int p = 0; p < NT / 2; ++p) {
      uint32_t b0, b1, b2, b3;
      if (!kTB) {
        LdMatrixX4Ptr<false>(B + (n0 + 16 * p + r + (mi >= 2 ? 8 : 0)) * ldb + k0 + (mi & 1) * 8, b0, b1, b2, b3);
      } else {
        LdMatrixX4Ptr<true>(B + (k0 + r + (mi & 1) * 8) * ldb + n0 + 16 * p + (mi >= 2 ? 8 : 0), b0, b1, b2, b3);
      }
      MmaBf16(acc[2 * p], a0, a1, a2, a3, b0, b1);
      MmaBf16(acc[2 * p + 1], a0, a1, a2, a3, b2, b3);
    }
  }
}

// Shared-memory plan of the kernel (dynamic shared memory; the phases reuse it in turn):
//  phase 0 (sparse key set): the top-k row being sorted, Kp2 ints;
//  phase 1 (teachers):       mma.sync: qa_j[t] [HAp][strideA] bf16, then 2 stages of kKT kv
//                            rows; wgmma: distill_wgmma::kSmemBytes (1 KiB alignment slack, 3
//                            swizzled 64 x 576 stages, the column sums), laid out there;
//  phase 2 (student):        q[t] [HIp][strideD] bf16, 2 stages of kSKT k rows, coef
//                            [HIp][kCoefStride] bf16, the grad_q accumulator [HIp][Dp] fp32, the
//                            grad_w partials [kGwParts][kMaxRows] and dI [kSKT] fp32.
// The host sizes the launch with Bytes(); the kernel takes its pointers from the same struct.
struct DistillSmemPlan {
  int HAp, DAp, strideA;  // teacher rows (padded to 16), dims (padded to 16), smem row stride
  int HIp, Dp, strideD;   // student likewise
  int Kp2;                // sparse: next power of two >= K

  static DistillSmemPlan For(const DistillLossCudaParams& p) {
    DistillSmemPlan s;
    s.HAp = static_cast<int>(RoundUp(p.HA, 16));
    s.DAp = static_cast<int>(RoundUp(p.DA, 16));
    s.strideA = s.DAp + 8;
    s.HIp = static_cast<int>(RoundUp(p.HI, 16));
    s.Dp = static_cast<int>(RoundUp(p.D, 16));
    s.strideD = s.Dp + 8;
    s.Kp2 = 1;
    if (p.sparse) {
      while (s.Kp2 < p.K) s.Kp2 <<= 1;
    }
    return s;
  }

  // Phase 0.
  __device__ int* SortKeys(unsigned char* smem) const { return reinterpret_cast<int*>(smem); }
  // Phase 1.
  __device__ __nv_bfloat16* TeacherQ(unsigned char* smem) const { return reinterpret_cast<__nv_bfloat16*>(smem); }
  __device__ __nv_bfloat16* TeacherKv(unsigned char* smem) const { return TeacherQ(smem) + HAp * strideA; }
  // Phase 2 (aliases phase 1).
  __device__ __nv_bfloat16* StudentQ(unsigned char* smem) const { return reinterpret_cast<__nv_bfloat16*>(smem); }
  __device__ __nv_bfloat16* StudentK(unsigned char* smem) const { return StudentQ(smem) + HIp * strideD; }
  __device__ __nv_bfloat16* Coef(unsigned char* smem) const { return StudentK(smem) + 2 * kSKT * strideD; }
  __device__ float* GradQ(unsigned char* smem) const { return reinterpret_cast<float*>(Coef(smem) + HIp * kCoefStride); }
  // grad_w partials [kGwParts][kMaxRows] and the tile's dI [kSKT] (student only; in dynamic memory so
  // the static arrays plus the wgmma teacher's stages fit the 227 KiB limit).
  __device__ float* GradW(unsigned char* smem) const { return GradQ(smem) + HIp * Dp; }
  __device__ float* Di(unsigned char* smem) const { return GradW(smem) + kGwParts * kMaxRows; }

  size_t TeacherBytes() const { return (static_cast<size_t>(HAp) + 2 * kKT) * strideA * 2; }
  size_t StudentBytes() const {
    return (static_cast<size_t>(HIp) + 2 * kSKT) * strideD * 2 + HIp * kCoefStride * 2 +
           static_cast<size_t>(HIp) * Dp * 4 + (kGwParts * kMaxRows + kSKT) * 4;
  }
  size_t SortBytes(bool sparse) const { return sparse ? static_cast<size_t>(Kp2) * 4 : 0; }
  size_t Bytes(bool sparse, bool wgmma) const {
    const size_t teacher = wgmma ? static_cast<size_t>(distill_wgmma::kSmemBytes) : TeacherBytes();
    return std::max({teacher, StudentBytes(), SortBytes(sparse)});
  }
};

struct KernelParams {
  DistillLossCudaParams p;
  DistillSmemPlan plan;   // the shared-memory layout (padded sizes and strides)
  int64_t slot_floats;    // pbar entries per CTA slot
  unsigned int* counter;
  float* pbar_ws;         // [grid, slot_floats]
  int32_t* keys_ws;       // [grid, K] (sparse)
  bool warp_keys_student; // phase 2: StudentWarpKeys (else StudentScoresAndGradients)
};

// Loads tile rows [i0, i0 + kRows) of the key list (n valid in total) of a row-major [*, dim] bf16
// tensor into dst (kRows rows of stride `stride`, dimp columns), zero-filling padding and
// invalid rows. Asynchronous: the caller commits and waits.
template <int kRows>
__device__ __forceinline__ void LoadTile(__nv_bfloat16* dst, int stride, const __nv_bfloat16* src, int dim, int dimp,
                                         int i0, int n, const int32_t* keys) {
  const int chunks = dimp / 8;
  for (int e = threadIdx.x; e < kRows * chunks; e += kThreads) {
    const int r = e / chunks, c = e - r * chunks;
    __nv_bfloat16* d = dst + r * stride + c * 8;
    const int i = i0 + r;
    if (i < n && c * 8 < dim) {
      const int64_t key = keys ? keys[i] : i;
      CpAsync16(d, src + key * dim + c * 8);
    } else {
      *reinterpret_cast<uint4*>(d) = make_uint4(0, 0, 0, 0);
    }
  }
}

// Copies rows x dim bf16 (row-major, contiguous) into smem rows of stride `stride`, zero-padding to
// rows_p x dimp. Synchronous loads.
__device__ __forceinline__ void LoadBlock(__nv_bfloat16* dst, int stride, const __nv_bfloat16* src, int rows, int dim,
                                          int rows_p, int dimp) {
  const int chunks = dimp / 8;
  for (int e = threadIdx.x; e < rows_p * chunks; e += kThreads) {
    const int r = e / chunks, c = e - r * chunks;
    uint4 v = make_uint4(0, 0, 0, 0);
    if (r < rows && c * 8 < dim) v = *reinterpret_cast<const uint4*>(src + static_cast<int64_t>(r) * dim + c * 8);
    *reinterpret_cast<uint4*>(dst + r * stride + c * 8) = v;
  }
}

// What the phases share, set up once per CTA before the query loop: the parameters, the thread's
// place in the block, the padded row groups and the shared memory carved by the plan.
struct CtaContext {
  const KernelParams& kp;
  const DistillLossCudaParams& p;
  int tid, lane, warp;
  int HA, DA, HI, D;
  int RGA, RGI;              // 16-row groups of the teachers and the student
  float* pbar;               // the CTA's pbar slot
  int32_t* keys_slot;        // the CTA's key slot (sparse)
  float t_scale2;            // attn_scale * log2(e)
  bool want_grads;
  __nv_bfloat16* s_qa;       // phase 1: qa_j[t]
  __nv_bfloat16* s_kv;       // phase 1: 2 stages of kKT rows
  __nv_bfloat16* s_q;        // phase 2: q[t]
  __nv_bfloat16* s_k;        // phase 2: 2 stages
  __nv_bfloat16* s_coef;     // phase 2: [HIp][kCoefStride]
  float* s_gq;               // phase 2: [HIp][Dp]
};

}  // namespace
}  // namespace indexcache
