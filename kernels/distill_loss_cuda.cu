// Fused distillation loss forward + backward on the GPU. The algorithm is described in
// kernels/distill_loss_cuda.h; the comments here are about the mechanics.
#include "kernels/distill_loss_cuda.h"

#include <algorithm>
#include <climits>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>

#include "core/cuda_check.h"
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

[[noreturn]] void Fail(const char* msg) {
  std::fprintf(stderr, "DistillLossCuda: %s\n", msg);
  std::fflush(stderr);
  std::abort();
}

int64_t RoundUp(int64_t x, int64_t m) { return (x + m - 1) / m * m; }

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

// Phase 0: the query's key set. Dense: the causal keys [0, end), n = end, *keys = nullptr (key i
// is row i). Sparse: topk[t] bitonic-sorted in shared memory and compacted to its distinct valid
// keys (< end) in keys_slot (deterministic order). Returns n; all threads call it.
__device__ __forceinline__ int GatherQueryKeySet(const CtaContext& c, int64_t t, int64_t end, unsigned char* smem,
                                                 int* s_int, const int32_t** keys_out) {
  const KernelParams& kp = c.kp;
  const DistillLossCudaParams& p = c.p;
  const int tid = c.tid, lane = c.lane, warp = c.warp;
  int32_t* keys_slot = c.keys_slot;
  int n = 0;
  const int32_t* keys = nullptr;
  if (!p.sparse) {
    n = static_cast<int>(end > 0 ? end : 0);
  } else {
    int* s_sort = kp.plan.SortKeys(smem);
    const int N = kp.plan.Kp2;
    for (int i = tid; i < N; i += kThreads) {
      int v = INT_MAX;
      if (i < p.K) {
        const int32_t s = p.topk[t * p.K + i];
        if (s >= 0 && s < end) v = s;
      }
      s_sort[i] = v;
    }
    __syncthreads();
    for (int kk = 2; kk <= N; kk <<= 1) {
      for (int j = kk >> 1; j > 0; j >>= 1) {
        for (int i = tid; i < N; i += kThreads) {
          const int ixj = i ^ j;
          if (ixj > i) {
            const int a = s_sort[i], b = s_sort[ixj];
            if ((a > b) == ((i & kk) == 0)) {
              s_sort[i] = b;
              s_sort[ixj] = a;
            }
          }
        }
        __syncthreads();
      }
    }
    int base = 0;
    for (int c0 = 0; c0 < N; c0 += kThreads) {
      const int i = c0 + tid;
      const bool f = i < N && s_sort[i] != INT_MAX && (i == 0 || s_sort[i] != s_sort[i - 1]);
      const unsigned ballot = __ballot_sync(0xffffffffu, f);
      if (lane == 0) s_int[warp] = __popc(ballot);
      __syncthreads();
      int off = base;
      for (int w2 = 0; w2 < warp; ++w2) off += s_int[w2];
      if (f) keys_slot[off + __popc(ballot & ((1u << lane) - 1u))] = s_sort[i];
      for (int w2 = 0; w2 < kWarps; ++w2) base += s_int[w2];
      __syncthreads();
    }
    n = base;
    keys = keys_slot;
    __syncthreads();  // keys visible to the block; s_sort is reused below
  }
  *keys_out = keys;
  return n;
}

// Phase 1: the teachers' target distribution. For each served layer j, qa_j[t] goes to shared
// memory and the key set streams through 2 stages of kKT kv rows twice: sweep 1 gives each head's
// online log-sum-exp (log2 domain, registers), sweep 2 rebuilds exp(logit - lse), sums it over
// heads per key and adds it / num_served into pbar; *ent accumulates the teacher entropy
// sum_j sum_s p_j log p_j / S (threads < kKT). All threads call it.
__device__ __forceinline__ void AccumulateTeacherDistribution(const CtaContext& c, int64_t t, int n,
                                                              const int32_t* keys, int num_tiles,
                                                              float (*s_part)[kSKT], double* ent_out) {
  const KernelParams& kp = c.kp;
  const DistillLossCudaParams& p = c.p;
  const int tid = c.tid, lane = c.lane, warp = c.warp;
  const int HA = c.HA, DA = c.DA, RGA = c.RGA;
  const float t_scale2 = c.t_scale2;
  float* pbar = c.pbar;
  __nv_bfloat16* s_qa = c.s_qa;
  __nv_bfloat16* s_kv = c.s_kv;
  double ent = *ent_out;
  for (int j = 0; j < p.num_served; ++j) {
    const __nv_bfloat16* kv = p.attn_kv[j];
    __syncthreads();  // previous users of the smem are done
    LoadBlock(s_qa, kp.plan.strideA, p.attn_q[j] + t * p.HA * p.DA, HA, DA, kp.plan.HAp, kp.plan.DAp);
    // Rows r0 = warp*16 + lane/4 and r1 = r0 + 8; log2-domain running max and sum.
    float m0 = -INFINITY, m1 = -INFINITY, l0 = 0.f, l1 = 0.f;
    const int r0 = warp * 16 + (lane >> 2), r1 = r0 + 8;
    for (int sweep = 0; sweep < 2; ++sweep) {
      const float lse0 = m0 + log2f(l0), lse1 = m1 + log2f(l1);
      __syncthreads();  // the previous sweep's last tile is consumed
      LoadTile<kKT>(s_kv, kp.plan.strideA, kv, DA, kp.plan.DAp, 0, n, keys);
      CpAsyncCommit();
      for (int tile = 0; tile < num_tiles; ++tile) {
        const __nv_bfloat16* buf = s_kv + (tile & 1) * kKT * kp.plan.strideA;
        CpAsyncWait<0>();
        __syncthreads();
        if (tile + 1 < num_tiles) {
          LoadTile<kKT>(s_kv + ((tile + 1) & 1) * kKT * kp.plan.strideA, kp.plan.strideA, kv, DA, kp.plan.DAp, (tile + 1) * kKT, n,
                   keys);
        }
        CpAsyncCommit();
        const int nv = min(kKT, n - tile * kKT);
        if (warp < RGA) {
          float acc[4][4] = {};
          WarpMma<4, false, false>(acc, s_qa, kp.plan.strideA, warp * 16, buf, kp.plan.strideA, 0, kp.plan.DAp);
          if (sweep == 0) {
            float mx0 = -INFINITY, mx1 = -INFINITY;
#pragma unroll
            for (int nt = 0; nt < 4; ++nt) {
#pragma unroll
              for (int e = 0; e < 4; ++e) {
                const int col = nt * 8 + 2 * (lane & 3) + (e & 1);
                const float x = col < nv ? acc[nt][e] * t_scale2 : -INFINITY;
                acc[nt][e] = x;
                if (e < 2) mx0 = fmaxf(mx0, x); else mx1 = fmaxf(mx1, x);
              }
            }
            mx0 = fmaxf(mx0, __shfl_xor_sync(0xffffffffu, mx0, 1));
            mx0 = fmaxf(mx0, __shfl_xor_sync(0xffffffffu, mx0, 2));
            mx1 = fmaxf(mx1, __shfl_xor_sync(0xffffffffu, mx1, 1));
            mx1 = fmaxf(mx1, __shfl_xor_sync(0xffffffffu, mx1, 2));
            const float nm0 = fmaxf(m0, mx0), nm1 = fmaxf(m1, mx1);  // finite: nv >= 1
            float s0 = 0.f, s1 = 0.f;
#pragma unroll
            for (int nt = 0; nt < 4; ++nt) {
              s0 += exp2f(acc[nt][0] - nm0) + exp2f(acc[nt][1] - nm0);
              s1 += exp2f(acc[nt][2] - nm1) + exp2f(acc[nt][3] - nm1);
            }
            s0 += __shfl_xor_sync(0xffffffffu, s0, 1);
            s0 += __shfl_xor_sync(0xffffffffu, s0, 2);
            s1 += __shfl_xor_sync(0xffffffffu, s1, 1);
            s1 += __shfl_xor_sync(0xffffffffu, s1, 2);
            l0 = l0 * exp2f(m0 - nm0) + s0;
            l1 = l1 * exp2f(m1 - nm1) + s1;
            m0 = nm0;
            m1 = nm1;
          } else {
            // Column sums of exp(logit - lse) over this warp's valid heads.
            float cs[4][2];
#pragma unroll
            for (int nt = 0; nt < 4; ++nt) {
#pragma unroll
              for (int c = 0; c < 2; ++c) {
                const int col = nt * 8 + 2 * (lane & 3) + c;
                float v = 0.f;
                if (col < nv) {
                  if (r0 < HA) v += exp2f(acc[nt][c] * t_scale2 - lse0);
                  if (r1 < HA) v += exp2f(acc[nt][2 + c] * t_scale2 - lse1);
                }
                v += __shfl_xor_sync(0xffffffffu, v, 4);
                v += __shfl_xor_sync(0xffffffffu, v, 8);
                v += __shfl_xor_sync(0xffffffffu, v, 16);
                cs[nt][c] = v;
              }
            }
            if (lane < 4) {
#pragma unroll
              for (int nt = 0; nt < 4; ++nt) {
                s_part[warp][nt * 8 + 2 * lane] = cs[nt][0];
                s_part[warp][nt * 8 + 2 * lane + 1] = cs[nt][1];
              }
            }
          }
        }
        if (sweep == 1) {
          __syncthreads();
          if (tid < nv) {
            float sum = 0.f;
            for (int g = 0; g < RGA; ++g) sum += s_part[g][tid];
            const float pj = sum / static_cast<float>(HA);
            const float contrib = pj / static_cast<float>(p.num_served);
            const int i = tile * kKT + tid;
            if (j == 0) pbar[i] = contrib; else pbar[i] += contrib;
            if (pj > 0.f) ent += static_cast<double>(pj) * log(static_cast<double>(pj)) / p.num_served;
          }
        }
      }
      CpAsyncWait<0>();
    }
  }
  *ent_out = ent;
}

// grad_k[tile keys] += coef^T (kSKT x HIp) . q[t] (HIp x Dp): (16-key group, 16-dim chunk) items
// spread over the warps, float4 atomics to global. Both students call it after the coef barrier.
__device__ __forceinline__ void AddGradKTile(const CtaContext& c, const __nv_bfloat16* s_coef,
                                             const __nv_bfloat16* s_q, int tile, int n, const int32_t* keys) {
  const KernelParams& kp = c.kp;
  const DistillLossCudaParams& p = c.p;
  const int lane = c.lane, warp = c.warp, D = c.D;
  const int dch = kp.plan.Dp / 16;
  for (int it = warp; it < (kSKT / 16) * dch; it += kWarps) {
    const int kg = it / dch, dc = it - kg * dch;
    float g[2][4] = {};
    WarpMma<2, true, true>(g, s_coef, kCoefStride, kg * 16, s_q, kp.plan.strideD, dc * 16, kp.plan.HIp);
    const int i0 = tile * kSKT + kg * 16 + (lane >> 2);
    // float4 atomics (sm_90): lanes 2c and 2c + 1 of a quad swap halves so that the even lane
    // owns columns [4c', 4c' + 4) of the first 8-column tile and the odd lane those of the
    // second: half as many atomic operations as float2.
    const bool even = (lane & 1) == 0;
    const int col = dc * 16 + (even ? 2 * (lane & 3) : 8 + 2 * ((lane & 3) - 1));
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      const float sx = even ? g[1][2 * h] : g[0][2 * h], sy = even ? g[1][2 * h + 1] : g[0][2 * h + 1];
      const float rx = __shfl_xor_sync(0xffffffffu, sx, 1), ry = __shfl_xor_sync(0xffffffffu, sy, 1);
      const float4 v = even ? make_float4(g[0][2 * h], g[0][2 * h + 1], rx, ry)
                            : make_float4(rx, ry, g[1][2 * h], g[1][2 * h + 1]);
      const int i = i0 + 8 * h;
      if (i < n && col < D) {
        const int64_t key = keys ? keys[i] : i;
        atomicAdd(reinterpret_cast<float4*>(p.grad_k + key * p.D + col), v);
      }
    }
  }
}

// Phase 2: the student. q[t] goes to shared memory and the key set streams twice in tiles of kSKT
// keys. Sweep A: the index scores I (mma.sync, ReLU and head weights in fp32, head reduction
// through s_part) and their online log-sum-exp. Sweep B: I again, dI = exp(I - lse) - pbar and
// the loss's cross term (*cross, warp 0, 2 keys per lane), then coef (bf16, shared) and the grad_w
// partials (s_gw, one row per 16-key quarter), grad_q[t] into the shared accumulator and grad_k by
// float4 atomics. All threads call it.
// __noinline__: inlined, ptxas hoisted the student's query-invariant values out of the query loop,
// so they were live (and spilled) across the wgmma teacher's loop, which then spilled ~20 registers
// around every tile's MMAs (teacher-only time +11 %). A call keeps the two phases' registers apart.
// (The teacher cannot be a call: across a call boundary ptxas serialises its wgmma chain.)
__device__ __noinline__ void StudentScoresAndGradients(const CtaContext& c, int64_t t, int n,
                                                          const int32_t* keys, float (*s_part)[kSKT],
                                                          float* s_di, float (*s_gw)[kMaxRows], float* s_w,
                                                          double (*s_red)[kWarps], double* cross_out) {
  const KernelParams& kp = c.kp;
  const DistillLossCudaParams& p = c.p;
  const int tid = c.tid, lane = c.lane, warp = c.warp;
  const int HI = c.HI, D = c.D, RGI = c.RGI;
  const bool want_grads = c.want_grads;
  const float* pbar = c.pbar;
  __nv_bfloat16* s_q = c.s_q;
  __nv_bfloat16* s_k = c.s_k;
  __nv_bfloat16* s_coef = c.s_coef;
  float* s_gq = c.s_gq;
  const int num_tiles = (n + kSKT - 1) / kSKT;
  double cross = *cross_out;
  __syncthreads();
  LoadBlock(s_q, kp.plan.strideD, p.q + t * p.HI * p.D, HI, D, kp.plan.HIp, kp.plan.Dp);
  for (int h = tid; h < kMaxRows; h += kThreads) {
    s_w[h] = h < HI ? p.w[t * p.HI + h] : 0.f;
#pragma unroll
    for (int qq = 0; qq < kGwParts; ++qq) s_gw[qq][h] = 0.f;
  }
  for (int e = tid; e < kp.plan.HIp * kp.plan.Dp; e += kThreads) s_gq[e] = 0.f;
  // Student items: (row group, 16-key quarter), at most 4 per warp (RGI <= 8).
  constexpr int kQuarters = kSKT / 16;
  constexpr int kItemsPerWarp = kMaxRows / 16 * kQuarters / kWarps;
  const int n_items = RGI * kQuarters;
  float lse_i = 0.f;  // natural-log lse of I over the key set (all threads after sweep A)
  float run_m = -INFINITY, run_l = 0.f;  // warp 0
  for (int sweep = 0; sweep < (want_grads || p.loss ? 2 : 0); ++sweep) {
    __syncthreads();  // the previous sweep's last tile is consumed
    LoadTile<kSKT>(s_k, kp.plan.strideD, p.k, D, kp.plan.Dp, 0, n, keys);
    CpAsyncCommit();
    for (int tile = 0; tile < num_tiles; ++tile) {
      __nv_bfloat16* buf = s_k + (tile & 1) * kSKT * kp.plan.strideD;
      CpAsyncWait<0>();
      __syncthreads();
      if (tile + 1 < num_tiles) {
        LoadTile<kSKT>(s_k + ((tile + 1) & 1) * kSKT * kp.plan.strideD, kp.plan.strideD, p.k, D, kp.plan.Dp,
                       (tile + 1) * kSKT, n, keys);
      }
      CpAsyncCommit();
      const int nv = min(kSKT, n - tile * kSKT);
      // Sweep B: warp 0's pbar of this tile (keys lane, lane + 32), loaded before the MMAs so its
      // L2 latency is hidden.
      float pb0 = 0.f, pb1 = 0.f;
      if (sweep == 1 && warp == 0) {
        if (lane < nv) pb0 = pbar[tile * kSKT + lane];
        if (lane + 32 < nv) pb1 = pbar[tile * kSKT + lane + 32];
      }
      float acc[kItemsPerWarp][2][4] = {};
#pragma unroll
      for (int ii = 0; ii < kItemsPerWarp; ++ii) {
        const int it = warp + kWarps * ii;
        if (it < n_items) {
          const int rg = it / kQuarters, nh = it % kQuarters;
          WarpMma<2, false, false>(acc[ii], s_q, kp.plan.strideD, rg * 16, buf, kp.plan.strideD, nh * 16, kp.plan.Dp);
          float cs[2][2];
#pragma unroll
          for (int nt = 0; nt < 2; ++nt) {
#pragma unroll
            for (int cc = 0; cc < 2; ++cc) {
              const float a0 = fmaxf(acc[ii][nt][cc] * p.index_scale, 0.f);
              const float a1 = fmaxf(acc[ii][nt][2 + cc] * p.index_scale, 0.f);
              acc[ii][nt][cc] = a0;
              acc[ii][nt][2 + cc] = a1;
              float v = s_w[rg * 16 + (lane >> 2)] * a0 + s_w[rg * 16 + (lane >> 2) + 8] * a1;
              v += __shfl_xor_sync(0xffffffffu, v, 4);
              v += __shfl_xor_sync(0xffffffffu, v, 8);
              v += __shfl_xor_sync(0xffffffffu, v, 16);
              cs[nt][cc] = v;
            }
          }
          if (lane < 4) {
#pragma unroll
            for (int nt = 0; nt < 2; ++nt) {
              s_part[rg][nh * 16 + nt * 8 + 2 * lane] = cs[nt][0];
              s_part[rg][nh * 16 + nt * 8 + 2 * lane + 1] = cs[nt][1];
            }
          }
        }
      }
      __syncthreads();
      if (warp == 0) {
        float I0 = 0.f, I1 = 0.f;
        for (int g = 0; g < RGI; ++g) {
          I0 += s_part[g][lane];
          I1 += s_part[g][lane + 32];
        }
        const bool v0 = lane < nv, v1 = lane + 32 < nv;
        if (sweep == 0) {
          float mx = fmaxf(v0 ? I0 : -INFINITY, v1 ? I1 : -INFINITY);
          for (int o = 16; o > 0; o >>= 1) mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, o));
          const float nm = fmaxf(run_m, mx);  // finite: nv >= 1
          float sum = (v0 ? __expf(I0 - nm) : 0.f) + (v1 ? __expf(I1 - nm) : 0.f);
          for (int o = 16; o > 0; o >>= 1) sum += __shfl_xor_sync(0xffffffffu, sum, o);
          run_l = run_l * __expf(run_m - nm) + sum;
          run_m = nm;
        } else {
          float di0 = 0.f, di1 = 0.f;
          if (v0) {
            di0 = __expf(I0 - lse_i) - pb0;
            cross += static_cast<double>(pb0) * static_cast<double>(I0 - lse_i);
          }
          if (v1) {
            di1 = __expf(I1 - lse_i) - pb1;
            cross += static_cast<double>(pb1) * static_cast<double>(I1 - lse_i);
          }
          s_di[lane] = di0;
          s_di[lane + 32] = di1;
        }
      }
      if (sweep == 0 || !want_grads) continue;
      __syncthreads();
      // coef (bf16, smem) and grad_w partials.
#pragma unroll
      for (int ii = 0; ii < kItemsPerWarp; ++ii) {
        const int it = warp + kWarps * ii;
        if (it < n_items) {
          const int rg = it / kQuarters, nh = it % kQuarters;
          const int row0 = rg * 16 + (lane >> 2), row1 = row0 + 8;
          const float cw0 = s_w[row0] * p.index_scale, cw1 = s_w[row1] * p.index_scale;
          float gw0 = 0.f, gw1 = 0.f;
#pragma unroll
          for (int nt = 0; nt < 2; ++nt) {
            const int col = nh * 16 + nt * 8 + 2 * (lane & 3);
            const float d0 = s_di[col], d1 = s_di[col + 1];
            const float a00 = acc[ii][nt][0], a01 = acc[ii][nt][1], a10 = acc[ii][nt][2], a11 = acc[ii][nt][3];
            gw0 += d0 * a00 + d1 * a01;
            gw1 += d0 * a10 + d1 * a11;
            *reinterpret_cast<__nv_bfloat162*>(s_coef + row0 * kCoefStride + col) =
                __floats2bfloat162_rn(a00 > 0.f ? d0 * cw0 : 0.f, a01 > 0.f ? d1 * cw0 : 0.f);
            *reinterpret_cast<__nv_bfloat162*>(s_coef + row1 * kCoefStride + col) =
                __floats2bfloat162_rn(a10 > 0.f ? d0 * cw1 : 0.f, a11 > 0.f ? d1 * cw1 : 0.f);
          }
          gw0 += __shfl_xor_sync(0xffffffffu, gw0, 1);
          gw0 += __shfl_xor_sync(0xffffffffu, gw0, 2);
          gw1 += __shfl_xor_sync(0xffffffffu, gw1, 1);
          gw1 += __shfl_xor_sync(0xffffffffu, gw1, 2);
          if ((lane & 3) == 0) {
            s_gw[nh][row0] += gw0;
            s_gw[nh][row1] += gw1;
          }
        }
      }
      __syncthreads();
      // grad_q[t] += coef (HIp x kSKT) . k_tile (kSKT x Dp): 16 x 16 items.
      if (p.grad_q) {
        const int dch = kp.plan.Dp / 16;
        for (int it = warp; it < RGI * dch; it += kWarps) {
          const int rg = it / dch, dc = it - rg * dch;
          float g[2][4] = {};
          WarpMma<2, false, true>(g, s_coef, kCoefStride, rg * 16, buf, kp.plan.strideD, dc * 16, kSKT);
#pragma unroll
          for (int nt = 0; nt < 2; ++nt) {
            const int col = dc * 16 + nt * 8 + 2 * (lane & 3);
            float* g0 = s_gq + (rg * 16 + (lane >> 2)) * kp.plan.Dp + col;
            float* g1 = g0 + 8 * kp.plan.Dp;
            g0[0] += g[nt][0];
            g0[1] += g[nt][1];
            g1[0] += g[nt][2];
            g1[1] += g[nt][3];
          }
        }
      }
      // grad_k[tile keys] += coef^T (kSKT x HIp) . q (HIp x Dp).
      if (p.grad_k) AddGradKTile(c, s_coef, s_q, tile, n, keys);
    }
    CpAsyncWait<0>();
    if (sweep == 0) {
      if (warp == 0 && lane == 0) s_red[0][0] = run_m + logf(run_l);
      __syncthreads();
      lse_i = static_cast<float>(s_red[0][0]);
      __syncthreads();
    }
  }
  *cross_out = cross;
}

// Phase 2, warp-keys student (the default where its registers suffice, DistillStudentImpl): the
// same sweeps as StudentScoresAndGradients, but each warp owns kKeysPerWarp = 8 keys of every
// 64-key tile across ALL row groups, so a key's I = sum_h w ReLU(.) is complete inside one warp
// (register sums over row groups, then 3 shuffles): no s_part round trip, no single-warp softmax
// and no barrier between the I products and the softmax. Sweep A keeps a per-warp online
// log-sum-exp (merged once at the end of the sweep) and has one barrier per tile (the tile's
// arrival); sweep B has two (arrival; coef complete before grad_q / grad_k read it). grad_w is
// accumulated per lane in registers over all tiles and grad_q in registers (each warp owns fixed
// 16 x 16 tiles of it: RGI * Dp / 16 <= kWarps * kMaxGqItems), both written to shared memory
// once per query: the tiled student's per-tile shared read-modify-writes (8-way bank conflicts
// on s_gq) are gone. The cross term is summed by the lanes of quad row 0 (each key once).
// __noinline__ for the reason given at StudentScoresAndGradients.
__device__ __noinline__ void StudentWarpKeys(const CtaContext& c, int64_t t, int n, const int32_t* keys,
                                             float (*s_part)[kSKT], float (*s_gw)[kMaxRows], float* s_w,
                                             double* cross_out) {
  const KernelParams& kp = c.kp;
  const DistillLossCudaParams& p = c.p;
  const int tid = c.tid, lane = c.lane, warp = c.warp;
  const int HI = c.HI, D = c.D, RGI = c.RGI;
  const int strideD = kp.plan.strideD, Dp = kp.plan.Dp;
  const bool want_grads = c.want_grads;
  const float* pbar = c.pbar;
  __nv_bfloat16* s_q = c.s_q;
  __nv_bfloat16* s_k = c.s_k;
  __nv_bfloat16* s_coef = c.s_coef;
  float* s_gq = c.s_gq;
  const int num_tiles = (n + kSKT - 1) / kSKT;
  const float scale = p.index_scale;
  double cross = *cross_out;
  __syncthreads();
  LoadBlock(s_q, strideD, p.q + t * p.HI * p.D, HI, D, kp.plan.HIp, Dp);
  for (int h = tid; h < kMaxRows; h += kThreads) {
    s_w[h] = h < HI ? p.w[t * p.HI + h] : 0.f;
#pragma unroll
    for (int qq = 0; qq < kGwParts; ++qq) s_gw[qq][h] = 0.f;
  }
  for (int e = tid; e < kp.plan.HIp * Dp; e += kThreads) s_gq[e] = 0.f;
  __syncthreads();
  // Fragment coordinates: rows rg * 16 + rq (+ 8), this lane's keys kcol, kcol + 1 of the tile.
  const int rq = lane >> 2, kq = lane & 3;
  const int kcol = warp * kKeysPerWarp + 2 * kq;
  float wr[kMaxRows / 16][2];
#pragma unroll
  for (int rg = 0; rg < kMaxRows / 16; ++rg) {
    wr[rg][0] = s_w[rg * 16 + rq];
    wr[rg][1] = s_w[rg * 16 + rq + 8];
  }
  const int dch = Dp / 16, n_gq = RGI * dch;
  float gq[kMaxGqItems][2][4] = {};
  float gw[kMaxRows / 16][2] = {};
  float lse_i = 0.f;                     // natural-log lse of I over the key set (after sweep A)
  float run_m = -INFINITY, run_l = 0.f;  // this warp's keys (warp-uniform)
  // B-fragment row address of this lane for ldmatrix.x4 (matrix lane / 8 covers k + 8 * (lane / 8)).
  const int brow = warp * kKeysPerWarp + (lane & 7), bk = (lane >> 3) * 8;
  for (int sweep = 0; sweep < (want_grads || p.loss ? 2 : 0); ++sweep) {
    __syncthreads();  // the previous sweep's last tile is consumed
    LoadTile<kSKT>(s_k, strideD, p.k, D, Dp, 0, n, keys);
    CpAsyncCommit();
    for (int tile = 0; tile < num_tiles; ++tile) {
      const __nv_bfloat16* buf = s_k + (tile & 1) * kSKT * strideD;
      CpAsyncWait<0>();
      __syncthreads();  // the tile has landed; the other buffer and coef are free
      if (tile + 1 < num_tiles) {
        LoadTile<kSKT>(s_k + ((tile + 1) & 1) * kSKT * strideD, strideD, p.k, D, Dp, (tile + 1) * kSKT, n, keys);
      }
      CpAsyncCommit();
      const int i0 = tile * kSKT + kcol;
      const bool v0 = i0 < n, v1 = i0 + 1 < n;
      float pb0 = 0.f, pb1 = 0.f;  // issued before the MMAs so the L2 latency is hidden
      if (sweep == 1) {
        if (v0) pb0 = pbar[i0];
        if (v1) pb1 = pbar[i0 + 1];
      }
      // acc[rg] = q[rg rows] . k[this warp's 8 keys]^T: one B fragment per 32 dims serves every row group.
      float acc[kMaxRows / 16][4] = {};
      for (int k0 = 0; k0 < Dp; k0 += 32) {
        const bool two = k0 + 16 < Dp;  // Dp is a multiple of 16, not always of 32
        uint32_t b0, b1, b2, b3;
        LdMatrixX4Ptr<false>(buf + brow * strideD + k0 + (two ? bk : (bk & 8)), b0, b1, b2, b3);
#pragma unroll
        for (int rg = 0; rg < kMaxRows / 16; ++rg) {
          if (rg < RGI) {
            const __nv_bfloat16* a = s_q + (rg * 16 + (lane & 15)) * strideD + k0 + (lane >> 4) * 8;
            uint32_t a0, a1, a2, a3;
            LdMatrixX4Ptr<false>(a, a0, a1, a2, a3);
            MmaBf16(acc[rg], a0, a1, a2, a3, b0, b1);
            if (two) {
              LdMatrixX4Ptr<false>(a + 16, a0, a1, a2, a3);
              MmaBf16(acc[rg], a0, a1, a2, a3, b2, b3);
            }
          }
        }
      }
      // ReLU (kept in acc for sweep B), head weights, sum over this lane's rows, then over rq.
      float I0 = 0.f, I1 = 0.f;
#pragma unroll
      for (int rg = 0; rg < kMaxRows / 16; ++rg) {
        if (rg < RGI) {
#pragma unroll
          for (int e = 0; e < 4; ++e) acc[rg][e] = fmaxf(acc[rg][e] * scale, 0.f);
          I0 += wr[rg][0] * acc[rg][0] + wr[rg][1] * acc[rg][2];
          I1 += wr[rg][0] * acc[rg][1] + wr[rg][1] * acc[rg][3];
        }
      }
#pragma unroll
      for (int o = 4; o < 32; o <<= 1) {
        I0 += __shfl_xor_sync(0xffffffffu, I0, o);
        I1 += __shfl_xor_sync(0xffffffffu, I1, o);
      }
      if (sweep == 0) {
        // Online lse over this warp's keys (I is the same in every quad row: warp-uniform).
        float mx = fmaxf(v0 ? I0 : -INFINITY, v1 ? I1 : -INFINITY);
        mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 1));
        mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 2));
        if (mx > -INFINITY) {  // a warp with no valid key in this tile keeps its state
          const float nm = fmaxf(run_m, mx);
          float sum = (v0 ? __expf(I0 - nm) : 0.f) + (v1 ? __expf(I1 - nm) : 0.f);
          sum += __shfl_xor_sync(0xffffffffu, sum, 1);
          sum += __shfl_xor_sync(0xffffffffu, sum, 2);
          run_l = run_l * __expf(run_m - nm) + sum;
          run_m = nm;
        }
        continue;
      }
      float d0 = 0.f, d1 = 0.f;
      if (v0) {
        d0 = __expf(I0 - lse_i) - pb0;
        if (rq == 0) cross += static_cast<double>(pb0) * static_cast<double>(I0 - lse_i);
      }
      if (v1) {
        d1 = __expf(I1 - lse_i) - pb1;
        if (rq == 0) cross += static_cast<double>(pb1) * static_cast<double>(I1 - lse_i);
      }
      if (!want_grads) continue;
      // coef = dI * w * index_scale * [a > 0] (bf16, shared) and the grad_w partials (registers).
#pragma unroll
      for (int rg = 0; rg < kMaxRows / 16; ++rg) {
        if (rg < RGI) {
          gw[rg][0] += d0 * acc[rg][0] + d1 * acc[rg][1];
          gw[rg][1] += d0 * acc[rg][2] + d1 * acc[rg][3];
          const float cw0 = wr[rg][0] * scale, cw1 = wr[rg][1] * scale;
          const int row0 = rg * 16 + rq;
          *reinterpret_cast<__nv_bfloat162*>(s_coef + row0 * kCoefStride + kcol) =
              __floats2bfloat162_rn(acc[rg][0] > 0.f ? d0 * cw0 : 0.f, acc[rg][1] > 0.f ? d1 * cw0 : 0.f);
          *reinterpret_cast<__nv_bfloat162*>(s_coef + (row0 + 8) * kCoefStride + kcol) =
              __floats2bfloat162_rn(acc[rg][2] > 0.f ? d0 * cw1 : 0.f, acc[rg][3] > 0.f ? d1 * cw1 : 0.f);
        }
      }
      __syncthreads();  // coef complete
      // grad_q[t] += coef (HIp x kSKT) . k_tile (kSKT x Dp) into this warp's register tiles.
      if (p.grad_q) {
#pragma unroll
        for (int ii = 0; ii < kMaxGqItems; ++ii) {
          const int it = warp + kWarps * ii;
          if (it < n_gq) {
            const int rg = it / dch, dc = it - rg * dch;
            WarpMma<2, false, true>(gq[ii], s_coef, kCoefStride, rg * 16, buf, strideD, dc * 16, kSKT);
          }
        }
      }
      if (p.grad_k) AddGradKTile(c, s_coef, s_q, tile, n, keys);
    }
    CpAsyncWait<0>();
    if (sweep == 0) {
      // Merge the warps' (max, sum) pairs into the query's lse.
      if (lane == 0) {
        s_part[warp][0] = run_m;
        s_part[warp][1] = run_l;
      }
      __syncthreads();
      float m = -INFINITY;
      for (int w2 = 0; w2 < kWarps; ++w2) m = fmaxf(m, s_part[w2][0]);
      float l = 0.f;
      for (int w2 = 0; w2 < kWarps; ++w2) {
        if (s_part[w2][1] > 0.f) l += s_part[w2][1] * __expf(s_part[w2][0] - m);
      }
      lse_i = m + logf(l);
    }
  }
  if (want_grads) {
    // grad_w: the quad's 8 keys summed, one partial row per warp (summed in WriteBackQueryResults).
#pragma unroll
    for (int rg = 0; rg < kMaxRows / 16; ++rg) {
      if (rg < RGI) {
#pragma unroll
        for (int hh = 0; hh < 2; ++hh) {
          float v = gw[rg][hh];
          v += __shfl_xor_sync(0xffffffffu, v, 1);
          v += __shfl_xor_sync(0xffffffffu, v, 2);
          if (kq == 0) s_gw[warp][rg * 16 + rq + 8 * hh] = v;
        }
      }
    }
    if (p.grad_q) {
#pragma unroll
      for (int ii = 0; ii < kMaxGqItems; ++ii) {
        const int it = warp + kWarps * ii;
        if (it < n_gq) {
          const int rg = it / dch, dc = it - rg * dch;
#pragma unroll
          for (int nt = 0; nt < 2; ++nt) {
            float* g0 = s_gq + (rg * 16 + rq) * Dp + dc * 16 + nt * 8 + 2 * kq;
            g0[0] += gq[ii][nt][0];
            g0[1] += gq[ii][nt][1];
            g0[8 * Dp] += gq[ii][nt][2];
            g0[8 * Dp + 1] += gq[ii][nt][3];
          }
        }
      }
    }
  }
  *cross_out = cross;
}

// Phase 3: write back: grad_q[t] and grad_w[t] (one CTA per query: deterministic) and the query's
// loss ent - cross, summed over the block in fp64 and added to *loss. All threads call it.
__device__ __forceinline__ void WriteBackQueryResults(const CtaContext& c, int64_t t, float (*s_gw)[kMaxRows],
                                                      double (*s_red)[kWarps], double ent, double cross) {
  const KernelParams& kp = c.kp;
  const DistillLossCudaParams& p = c.p;
  const int tid = c.tid, lane = c.lane, warp = c.warp;
  const int HI = c.HI, D = c.D;
  const bool want_grads = c.want_grads;
  const float* s_gq = c.s_gq;
  if (want_grads) {
    if (p.grad_q) {
      for (int e = tid; e < HI * D; e += kThreads) {
        const int h = e / D, d = e - h * D;
        p.grad_q[(t * p.HI + h) * p.D + d] += s_gq[h * kp.plan.Dp + d];
      }
    }
    if (p.grad_w) {
      for (int h = tid; h < HI; h += kThreads) {
        float sum = 0.f;
#pragma unroll
        for (int qq = 0; qq < kGwParts; ++qq) sum += s_gw[qq][h];  // fixed order: deterministic
        p.grad_w[t * p.HI + h] += sum;
      }
    }
  }
  if (p.loss) {
    double v = ent - cross;
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    if (lane == 0) s_red[1][warp] = v;
    __syncthreads();
    if (tid == 0) {
      double sum = 0.0;
      for (int w2 = 0; w2 < kWarps; ++w2) sum += s_red[1][w2];
      atomicAdd(p.loss, sum);
    }
  }
}

// kWgmmaTeacher: phase 1 runs distill_wgmma::TeacherPhase (kernels/distill_teacher_wgmma.cuh)
// instead of AccumulateTeacherDistribution; the other phases are the same code.
template <bool kWgmmaTeacher>
__global__ void __launch_bounds__(kThreads, 1) DistillLossKernel(const KernelParams kp) {
  extern __shared__ __align__(16) unsigned char smem[];
  __shared__ float s_part[kWarps][kSKT];      // per row group partial column sums
  __shared__ float s_w[kMaxRows];             // w[t]
  __shared__ double s_red[2][kWarps];
  __shared__ int s_int[kWarps + 2];

  const DistillLossCudaParams& p = kp.p;
  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  float(*s_gw)[kMaxRows] = reinterpret_cast<float(*)[kMaxRows]>(kp.plan.GradW(smem));  // per 16-key quarter
  float* s_di = kp.plan.Di(smem);                                                       // the tile's dI
  const CtaContext c{kp,
                     p,
                     tid,
                     lane,
                     warp,
                     static_cast<int>(p.HA),
                     static_cast<int>(p.DA),
                     static_cast<int>(p.HI),
                     static_cast<int>(p.D),
                     kp.plan.HAp / 16,
                     kp.plan.HIp / 16,
                     kp.pbar_ws + static_cast<int64_t>(blockIdx.x) * kp.slot_floats,
                     p.sparse ? kp.keys_ws + static_cast<int64_t>(blockIdx.x) * p.K : nullptr,
                     p.attn_scale * kLog2e,
                     p.grad_q || p.grad_k || p.grad_w,
                     kp.plan.TeacherQ(smem),
                     kp.plan.TeacherKv(smem),
                     kp.plan.StudentQ(smem),
                     kp.plan.StudentK(smem),
                     kp.plan.Coef(smem),
                     kp.plan.GradQ(smem)};

  while (true) {
    __syncthreads();
    if (tid == 0) s_int[kWarps] = static_cast<int>(atomicAdd(kp.counter, 1u));
    __syncthreads();
    const int64_t order = s_int[kWarps];
    if (order >= p.Tq) break;
    const int64_t t = p.sparse ? order : p.Tq - 1 - order;
    const int64_t end = min(p.query_offset + t + 1, p.L);

    const int32_t* keys = nullptr;
    const int n = GatherQueryKeySet(c, t, end, smem, s_int, &keys);  // phase 0
    if (n == 0) continue;
    const int num_tiles = (n + kKT - 1) / kKT;

    double ent = 0.0;    // sum_j sum_s p_j log p_j / S  (threads < kKT)
    double cross = 0.0;  // sum_s pbar (I - lse)          (threads < kKT)

    if constexpr (kWgmmaTeacher) {  // phase 1
      const uint32_t raw = static_cast<uint32_t>(__cvta_generic_to_shared(smem));
      const uint32_t pad = ((raw + 1023u) & ~1023u) - raw;
      float* s_col = reinterpret_cast<float*>(smem + pad + distill_wgmma::kStages * distill_wgmma::kTileBytes);
      distill_wgmma::TeacherPhase(p.attn_q, p.attn_kv, p.num_served, t, c.HA, c.DA, c.t_scale2, n, keys, c.pbar,
                                  raw + pad, s_col, &ent);
    } else {
      AccumulateTeacherDistribution(c, t, n, keys, num_tiles, s_part, &ent);
    }
    if (kp.warp_keys_student) {  // phase 2
      StudentWarpKeys(c, t, n, keys, s_part, s_gw, s_w, &cross);
    } else {
      StudentScoresAndGradients(c, t, n, keys, s_part, s_di, s_gw, s_w, s_red, &cross);
    }
    __syncthreads();
    WriteBackQueryResults(c, t, s_gw, s_red, ent, cross);  // phase 3
  }
}

struct Layout {
  bool wgmma;  // the teacher path (DistillTeacherImpl resolved for the device and shapes)
  bool warp_keys_student;  // the student path (DistillStudentImpl resolved for the shapes)
  DistillSmemPlan plan;
  int64_t slot_floats;
  size_t smem_bytes;
  int grid;
};

Layout MakeLayout(const DistillLossCudaParams& p) {
  if (p.Tq < 0 || p.L < 0) Fail("negative sizes");
  if (p.HI < 1 || p.HI > kMaxRows || p.HA < 1 || p.HA > kMaxRows) Fail("need 1 <= HI, HA <= 128");
  if (p.D < 8 || p.D % 8 != 0 || p.D > 256 || p.DA < 8 || p.DA % 8 != 0) {
    Fail("need D, DA multiples of 8 and D <= 256");
  }
  if (p.num_served < 1 || p.num_served > kDistillMaxServed) Fail("need 1 <= num_served <= 8");
  if (p.sparse && (p.K < 1 || p.K > (1 << 20))) Fail("sparse mode needs 1 <= K <= 2^20");
  if (p.L >= (int64_t{1} << 31)) Fail("L must be < 2^31");
  Layout l;
  int dev = 0, sms = 0, major = 0, minor = 0;
  CUDA_CHECK(cudaGetDevice(&dev));
  CUDA_CHECK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, dev));
  CUDA_CHECK(cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, dev));
  CUDA_CHECK(cudaDeviceGetAttribute(&minor, cudaDevAttrComputeCapabilityMinor, dev));
  const bool wgmma_ok = major == 9 && minor == 0 && p.DA <= distill_wgmma::kMaxDA;
  if (p.teacher_impl == DistillTeacherImpl::kWgmma && !wgmma_ok) Fail("the wgmma teacher needs sm_90 and DA <= 576");
  l.wgmma = p.teacher_impl == DistillTeacherImpl::kWgmma || (p.teacher_impl == DistillTeacherImpl::kAuto && wgmma_ok);
  l.plan = DistillSmemPlan::For(p);
  // The warp-keys student keeps grad_q in registers: at most kMaxGqItems 16 x 16 tiles per warp.
  const bool warp_keys_ok = (l.plan.HIp / 16) * (l.plan.Dp / 16) <= kWarps * kMaxGqItems;
  if (p.student_impl == DistillStudentImpl::kWarpKeys && !warp_keys_ok) {
    Fail("the warp-keys student needs (HI / 16) * (D / 16) <= 64 (rounded up)");
  }
  l.warp_keys_student = p.student_impl == DistillStudentImpl::kWarpKeys ||
                        (p.student_impl == DistillStudentImpl::kAuto && warp_keys_ok);
  l.slot_floats = RoundUp(std::max<int64_t>(p.sparse ? p.K : p.L, 1), 64);
  l.smem_bytes = l.plan.Bytes(p.sparse, l.wgmma);
  l.grid = std::max(sms, 1);
  return l;
}

size_t WorkspaceBytes(const DistillLossCudaParams& p, const Layout& l) {
  size_t bytes = 256;  // counter
  bytes += static_cast<size_t>(l.grid) * l.slot_floats * 4;
  if (p.sparse) bytes += static_cast<size_t>(l.grid) * RoundUp(p.K, 64) * 4;
  return bytes;
}

}  // namespace

size_t DistillLossCudaWorkspaceBytes(const DistillLossCudaParams& p) { return WorkspaceBytes(p, MakeLayout(p)); }

void DistillLossCuda(const DistillLossCudaParams& p) {
  const Layout l = MakeLayout(p);
  if (p.workspace == nullptr || p.workspace_bytes < WorkspaceBytes(p, l)) Fail("workspace too small");
  if (p.Tq == 0) return;
  int dev = 0, max_smem = 0;
  CUDA_CHECK(cudaGetDevice(&dev));
  CUDA_CHECK(cudaDeviceGetAttribute(&max_smem, cudaDevAttrMaxSharedMemoryPerBlockOptin, dev));
  const auto kernel = l.wgmma ? DistillLossKernel<true> : DistillLossKernel<false>;
  cudaFuncAttributes attr;
  CUDA_CHECK(cudaFuncGetAttributes(&attr, kernel));
  if (l.smem_bytes + attr.sharedSizeBytes > static_cast<size_t>(max_smem)) {
    Fail("shapes need more shared memory than the device has (HA, DA or sparse K too large)");
  }
  CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                  static_cast<int>(l.smem_bytes)));
  KernelParams kp;
  kp.p = p;
  kp.plan = l.plan;
  kp.slot_floats = l.slot_floats;
  kp.warp_keys_student = l.warp_keys_student;
  unsigned char* ws = static_cast<unsigned char*>(p.workspace);
  kp.counter = reinterpret_cast<unsigned int*>(ws);
  kp.pbar_ws = reinterpret_cast<float*>(ws + 256);
  kp.keys_ws = reinterpret_cast<int32_t*>(ws + 256 + static_cast<size_t>(l.grid) * l.slot_floats * 4);
  CUDA_CHECK(cudaMemsetAsync(kp.counter, 0, sizeof(unsigned int), p.stream));
  const int grid = static_cast<int>(std::min<int64_t>(p.Tq, l.grid));
  kernel<<<grid, kThreads, l.smem_bytes, p.stream>>>(kp);
  CUDA_CHECK(cudaGetLastError());
}

Status DistillLossCudaSupports(const DistillLossCudaSizes& s) {
  const auto unsupported = [](const std::string& what, const std::string& supported) {
    return Unimplemented(what + " is not supported by the CUDA distillation loss kernel (supported: " + supported + ")");
  };
  const auto field = [](const char* name, int64_t v) { return std::string("field '") + name + "' = " + std::to_string(v); };
  if (s.index_heads < 1 || s.index_heads > kMaxRows) return unsupported(field("index_n_heads", s.index_heads), "1 to 128");
  if (s.attention_heads < 1 || s.attention_heads > kMaxRows) {
    return unsupported(field("num_attention_heads", s.attention_heads), "1 to 128");
  }
  if (s.index_head_dim < 8 || s.index_head_dim % 8 != 0 || s.index_head_dim > 256) {
    return unsupported(field("index_head_dim", s.index_head_dim), "a multiple of 8 up to 256");
  }
  if (s.latent_dim < 8 || s.latent_dim % 8 != 0) {
    return unsupported("kv_lora_rank + qk_rope_head_dim = " + std::to_string(s.latent_dim), "a multiple of 8");
  }
  if (s.max_served < 1 || s.max_served > kDistillMaxServed) {
    return unsupported("a pattern whose Full layer serves " + std::to_string(s.max_served) + " layers",
                       "at most " + std::to_string(kDistillMaxServed) + " layers per Full layer, itself included");
  }
  if (s.sparse && (s.topk < 1 || s.topk > (1 << 20))) return unsupported(field("index_topk", s.topk), "1 to 2^20");
  return Status::Ok();
}

}  // namespace indexcache
