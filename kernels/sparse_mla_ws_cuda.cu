// Sparse MLA (absorbed MQA form) on Hopper, warp-specialised: one CTA per (query token, group of 64
// heads), 384 threads = two consumer warpgroups (WG0, WG1) and one loader warpgroup (WG2).
//
// Why this shape (the two-warpgroup kernel in sparse_mla_cuda.cu ran S, softmax and P V of each
// 64-key chunk in series with CTA barriers between, S at N = 32 per warpgroup, the gathers issued
// by the computing threads):
//   - The loader gathers latents with cp.async into two 64-key stages and signals mbarriers; it
//     gives registers to the consumers (setmaxnreg), which never wait on their own copies.
//   - The keys are taken in pairs of 64-key blocks: WG0 owns block 2i (stage 0), WG1 block 2i + 1
//     (stage 1). Each computes S = Q K^T for all 64 heads x its 64 keys (wgmma N = 64: Q's reads
//     from shared memory amortised over twice the keys) and the softmax of its own block, while the
//     other warpgroup's wgmmas keep the tensor cores busy (the two drift into a ping-pong).
//   - d_v is split: WG0 accumulates output columns [0, 256), WG1 [256, 512) (128 fp32 per thread).
//     So each needs both blocks' P: its own from registers (wgmma with A in registers), the other's
//     through shared memory. WG0's P goes into stage 0's RoPE columns (dead once S of block 2i is
//     done), WG1's into an 8 KB buffer: Q + 2 stages + P = 224 KB.
//   - Both warpgroups keep the same running max: WG0 publishes max(m, block 2i), WG1 extends it with
//     block 2i + 1 and publishes it back, WG0 rescales its P (still fp32 in registers) before it
//     shares it. The max moves only when it grows by > 2^8 (base 2), so O is rarely rescaled.
//     (Measured against the alternative: each warpgroup on its own max, reconciled after the P
//     hand-off, is 13-16 % slower: the two softmaxes then run in lockstep with the tensor cores
//     idle, where the hand-off staggers them behind the other warpgroup's wgmmas.)
//   - Each stage is loaded and freed in two halves (columns [0, 256) and [256, 576)), ordered so
//     that the half freed first is refilled first: stage 0's left half is free as soon as WG0 has
//     multiplied its own P by it.
//   - Softmax in few instructions (it sits on the critical path between the GEMMs): the scale is
//     folded into one FFMA per score ahead of ex2.approx, validity comes from two ballots, P0 is
//     repacked only when the max moved. O leaves through shared memory (Q's tile) as 16-byte
//     coalesced streaming stores. Gathers carry an L2 evict-last policy, Q evict-first.
// Per pair i (ready / free: mbarriers; M0, M1, P0, P1, L: named barriers over WG0 + WG1):
//   WG0: S0 (waits ready 0L, 0R) | softmax, publish m_a -> M0 | O += P0 V0[:, :256] (regs) | free 0L
//        | M1: m_b, rescale P0, O -> sP0 -> P0 | P1: O += sP1 V1[:, :256] | S0 of pair i + 1, free 1L
//   WG1: S1 (waits ready 1R, 1L) | M0: m_a, softmax, publish m_b -> M1 | O += P1 V1[:, 256:] (regs),
//        sP1 -> P1 | P0: O += sP0 V0[:, 256:] | free 1R, free 0R
//   WG2: per pair, gathers 0L, 1R, 0R, 1L, each after its free barrier.
// Invalid keys (-1, out of range, past topk) are zero-filled by the loader and masked to -inf by
// the consumers, which read the indices themselves.
//
// Measured (sparse_mla_cuda_bench, H200, T = 4096, H = 128, topk 2048, 2026-12-01; docs/benchmarks.md):
// 632 / 563 / 506 TFLOP/s at L = 8K / 32K / 128K (cuBLAS bf16 GEMM 777 in the same run; the
// two-warpgroup kernel 438 / 422 / 397); decode (T = 64 / 128, own 32K context each) 423 / 452.
// What limits it: with both stages in use by the pair, the half of each stage that the *other*
// warpgroup multiplies is freed only at the end of the pair, and the owner's next S needs it at
// once, so one gather latency per pair is exposed (an ncu profile at 128K: WG1 spends 32 % of its
// samples waiting on stage-ready barriers, WG0 16 %). From L2 (8K) that costs little (the variant
// with no gathers at all runs at the same speed); from HBM (128K, L2 hit rate 49 %) it costs ~15 %.
// L2 prefetch of later pairs by the loader (bulk or per line) measured slower at every context.
#include <cmath>
#include <cstdint>

#include "core/cuda_check.h"
#include "kernels/ptx.cuh"
#include "kernels/sparse_mla_cuda_internal.h"
#include "kernels/sparse_mla_ws_fp8_loader.cuh"
#include "kernels/sparse_mla_ws_plan.cuh"

namespace indexcache {
namespace sparse_mla {
namespace {

using namespace ws;

using Plan = WsPlan;
enum NamedBarrier : int { kBarM0 = 1, kBarM1 = 2, kBarP0 = 3, kBarP1 = 4, kBarL = 5, kBarStage0 = 6 /* and 7 */ };
[[maybe_unused]] constexpr int kConsumerThreads = 256;
[[maybe_unused]] constexpr float kMaxSlack = 8.f;  // base 2: p <= 256, l <= 256 topk
WsExperiment g_experiment;  // see SetWsExperiment

#if INDEXCACHE_PTX_HAS_WGMMA
using namespace ptx;

// wgmma descriptors as (low word, high word): the low word holds the shared address >> 4 (14 bits),
// so the descriptor of base + off is the base's low word + off / 16 (no carry: every address here
// is below 256 KB). Adding a constant to one 32-bit word keeps the 72 descriptors of an S pass
// cheap to rematerialise instead of precomputed, 64-bit, and spilled.
// Opaque() hides the base from the optimiser at each GEMM, which otherwise hoists every descriptor
// of the loop out of it and spills them.
struct Desc {
  uint32_t lo, hi;
  __device__ __forceinline__ uint64_t At(uint32_t off) const {
    return (static_cast<uint64_t>(hi) << 32) | (lo + (off >> 4));
  }
  __device__ __forceinline__ Desc Opaque() const {
    Desc d;
    asm volatile("mov.b32 %0, %2;\n\tmov.b32 %1, %3;\n" : "=r"(d.lo), "=r"(d.hi) : "r"(lo), "r"(hi));
    return d;
  }
};
__device__ __forceinline__ Desc MakeDesc(uint32_t addr, uint32_t lbo) {
  const uint64_t d = WgmmaDesc(addr, lbo, 1024);
  return {static_cast<uint32_t>(d), static_cast<uint32_t>(d >> 32)};
}

// S (+)= Q K^T over column blocks [kB0, kB1) of one stage: 64 heads x 64 keys, 4 wgmmas per block.
template <int kB0, int kB1>
__device__ __forceinline__ void IssueS(float (&s)[32], Desc dq_in, Desc dk_in, bool first) {
  const Desc dq = dq_in.Opaque(), dk = dk_in.Opaque();
#pragma unroll
  for (int b = kB0; b < kB1; ++b) {
#pragma unroll
    for (int kk = 0; kk < 4; ++kk) {
      WgmmaM64N64K16(s, dq.At(b * kBlockBytes + kk * 32), dk.At(b * kBlockBytes + kk * 32),
                     (first && b == kB0 && kk == 0) ? 0 : 1);
    }
  }
}

// O += P V over one 64-key block, P in registers (pr[4 ks .. 4 ks + 3] is the k-slice ks), V the 256
// columns whose MN-major descriptor is dv (lbo: one 64-column block).
__device__ __forceinline__ void IssuePvRegs(float (&o)[128], const uint32_t (&pr)[16], Desc dv_in) {
  const Desc dv = dv_in.Opaque();
#pragma unroll
  for (int ks = 0; ks < 4; ++ks) {
    WgmmaM64N256K16RegATransB(o, pr[4 * ks], pr[4 * ks + 1], pr[4 * ks + 2], pr[4 * ks + 3], dv.At(ks * 16 * 128), 1);
  }
}

// O += P V with P from shared memory (64 x 64, swizzled, K-major descriptor dp).
__device__ __forceinline__ void IssuePvSmem(float (&o)[128], Desc dp_in, Desc dv_in) {
  const Desc dp = dp_in.Opaque(), dv = dv_in.Opaque();
#pragma unroll
  for (int ks = 0; ks < 4; ++ks) WgmmaM64N256K16TransB(o, dp.At(ks * 32), dv.At(ks * 16 * 128), 1);
}

// Validity of this thread's keys of block `blk` (q = lane % 4; the thread's columns are 8n + 2q + e,
// n = 0..7, e = 0..1): lane l reads keys 2l and 2l + 1 and two ballots spread them over the warp.
// Returned shifted by q, so bit 4n of .x (e = 0) or .y (e = 1) is the key 8n + 2q + e. All 32 lanes
// must call it.
__device__ __forceinline__ uint2 ValidBits(const int32_t* idx_row, int blk, int topk, int L, int lane, int q) {
  const int j = blk * kBlockKeys + 2 * lane;
  const int v0 = j < topk ? __ldg(idx_row + j) : -1;
  const int v1 = j + 1 < topk ? __ldg(idx_row + j + 1) : -1;
  const uint32_t b0 = __ballot_sync(0xffffffffu, v0 >= 0 && v0 < L);
  const uint32_t b1 = __ballot_sync(0xffffffffu, v1 >= 0 && v1 < L);
  return make_uint2(b0 >> q, b1 >> q);
}

// Masks invalid keys to -inf (raw scores: the scale, > 0, is applied inside the exponent) and returns
// the rows' block max in base-2 logit units (quad-reduced).
__device__ __forceinline__ void MaskMax(float (&s)[32], uint2 valid, float scale_log2, float& bm0, float& bm1) {
  bm0 = -INFINITY;
  bm1 = -INFINITY;
#pragma unroll
  for (int n = 0; n < 8; ++n) {
#pragma unroll
    for (int e = 0; e < 2; ++e) {
      const bool ok = ((e ? valid.y : valid.x) >> (4 * n)) & 1u;
      s[4 * n + e] = ok ? s[4 * n + e] : -INFINITY;
      s[4 * n + 2 + e] = ok ? s[4 * n + 2 + e] : -INFINITY;
      bm0 = fmaxf(bm0, s[4 * n + e]);
      bm1 = fmaxf(bm1, s[4 * n + 2 + e]);
    }
  }
  bm0 = fmaxf(bm0, __shfl_xor_sync(0xffffffffu, bm0, 1));
  bm0 = fmaxf(bm0, __shfl_xor_sync(0xffffffffu, bm0, 2));
  bm1 = fmaxf(bm1, __shfl_xor_sync(0xffffffffu, bm1, 1));
  bm1 = fmaxf(bm1, __shfl_xor_sync(0xffffffffu, bm1, 2));
  bm0 *= scale_log2;  // -inf stays -inf
  bm1 *= scale_log2;
}

// The running max after a block whose max is bm, starting from m (kept unless bm exceeds it by more
// than kMaxSlack).
__device__ __forceinline__ float NextMax(float m, float bm) {
  return (m == -INFINITY || bm > m + kMaxSlack) ? bm : m;
}

// s <- 2^(s scale_log2 - m) (0 for masked keys; m = -inf, no valid key yet, uses base 0); returns the
// row sums. One FFMA and one MUFU per score.
__device__ __forceinline__ void Exponentiate(float (&s)[32], float scale_log2, float m0, float m1, float& sum0,
                                             float& sum1) {
  const float nb0 = m0 == -INFINITY ? 0.f : -m0, nb1 = m1 == -INFINITY ? 0.f : -m1;
  sum0 = 0.f;
  sum1 = 0.f;
#pragma unroll
  for (int n = 0; n < 8; ++n) {
    s[4 * n] = Ex2Approx(fmaf(s[4 * n], scale_log2, nb0));
    s[4 * n + 1] = Ex2Approx(fmaf(s[4 * n + 1], scale_log2, nb0));
    s[4 * n + 2] = Ex2Approx(fmaf(s[4 * n + 2], scale_log2, nb1));
    s[4 * n + 3] = Ex2Approx(fmaf(s[4 * n + 3], scale_log2, nb1));
    sum0 += s[4 * n] + s[4 * n + 1];
    sum1 += s[4 * n + 2] + s[4 * n + 3];
  }
}

// exp2(from - to), 1 when unchanged (also when both are -inf).
__device__ __forceinline__ float Rescale(float from, float to) { return from == to ? 1.f : Ex2Approx(from - to); }

__device__ __forceinline__ void ScaleO(float (&o)[128], float a0, float a1) {
  if (__any_sync(0xffffffffu, a0 != 1.f || a1 != 1.f)) {
#pragma unroll
    for (int n = 0; n < 32; ++n) {
      o[4 * n] *= a0;
      o[4 * n + 1] *= a0;
      o[4 * n + 2] *= a1;
      o[4 * n + 3] *= a1;
    }
  }
}

// Stores P (bf16 pairs, pr[2n]: row0, pr[2n + 1]: row1, columns 8n + 2q) into a swizzled 64 x 64 tile.
__device__ __forceinline__ void StoreP(uint32_t sP, const uint32_t (&pr)[16], int row0, int row1, int q) {
#pragma unroll
  for (int n = 0; n < 8; ++n) {
    StoreShared32(sP + row0 * 128 + ((n ^ (row0 & 7)) << 4) + 4 * q, pr[2 * n]);
    StoreShared32(sP + row1 * 128 + ((n ^ (row1 & 7)) << 4) + 4 * q, pr[2 * n + 1]);
  }
}

__device__ __forceinline__ void PackP(const float (&s)[32], uint32_t (&pr)[16], float f0, float f1) {
#pragma unroll
  for (int n = 0; n < 8; ++n) {
    pr[2 * n] = PackBf16(s[4 * n] * f0, s[4 * n + 1] * f0);
    pr[2 * n + 1] = PackBf16(s[4 * n + 2] * f1, s[4 * n + 3] * f1);
  }
}

template <bool kFp8>
__global__ void __launch_bounds__(kThreads, 1)
    SparseMlaWsKernel(const __nv_bfloat16* __restrict__ q, const __nv_bfloat16* __restrict__ kv,
                      const uint8_t* __restrict__ kv8, const int32_t* __restrict__ indices, int H, int L, int topk, int head_groups,
                      float scale_log2, __nv_bfloat16* __restrict__ out, float* __restrict__ lse,
                      int prefetch_pairs, bool skip_gathers, bool kv_evict_last, bool fp8_polling) {
  extern __shared__ uint8_t smem_raw[];
  const uint32_t raw_addr = static_cast<uint32_t>(__cvta_generic_to_shared(smem_raw));
  const uint32_t pad = ((raw_addr + 1023u) & ~1023u) - raw_addr;
  uint8_t* smem = smem_raw + pad;
  const uint32_t sb = raw_addr + pad;
  float* sM = reinterpret_cast<float*>(smem + Plan::kM);
  float* sL = reinterpret_cast<float*>(smem + Plan::kL);

  const int tid = threadIdx.x;
  const int wg = tid >> 7;
  const int64_t t = blockIdx.x / head_groups;
  const int h0 = static_cast<int>(blockIdx.x % head_groups) * kHeads;
  const int32_t* idx_row = indices + t * topk;
  const int n_pairs = (topk + 2 * kBlockKeys - 1) / (2 * kBlockKeys);

  if (tid == 0) {
    MbarInit(sb + Plan::QBar(), 128);
    for (int s = 0; s < 2; ++s) {
      for (int h = 0; h < 2; ++h) {
        MbarInit(sb + Plan::Ready(s, h), 128);  // the loader's 128 threads (cp.async arrivals)
        MbarInit(sb + Plan::Free(s, h), 128);   // one consumer warpgroup
        for (int w = 0; w < 4; ++w) MbarInit(sb + Plan::Landed(w, s, h), 32);
      }
    }
  }
  __syncthreads();

  if (wg == 2) {
    // ---------------- Loader: 8 threads per 128-byte row segment, 16 rows per pass, 4 passes.
    // (56, also for FP8, which spills one register here: with 64, the whole register file beside
    // the consumers' 2 x 128 x 224, the FP8 tests took ~2 minutes instead of 3 s and its bench did
    // not finish in 3; the likely cause, not verified, is the consumers' setmaxnreg.inc waiting.)
    SetMaxRegsDealloc<56>();
    const int lt = tid - 256, lrow = lt >> 3, lc = lt & 7;
    const uint32_t swz = static_cast<uint32_t>((lc ^ (lrow & 7)) << 4);  // rows lrow + 16p share lrow & 7
    // Q is read once (evict-first); the latents are gathered again by the other head group of the
    // token and by other tokens (evict-last, unless the experiment turns it off).
    const uint64_t q_policy = L2PolicyEvictFirst(), kv_policy = L2PolicyEvictLast();
#pragma unroll
    for (int p = 0; p < 4; ++p) {
      const int r = lrow + 16 * p;
      const bool valid = h0 + r < H;
      const __nv_bfloat16* src = q + ((t * H + (valid ? h0 + r : 0)) * kDqk + lc * 8);
#pragma unroll
      for (int b = 0; b < kColBlocks; ++b) {
        CpAsync16ZeroFillL2PrefetchHint(sb + Plan::kQ + b * kBlockBytes + r * 128 + swz, src + 64 * b, valid, q_policy);
      }
    }
    CpAsyncMbarArrive(sb + Plan::QBar());
    if constexpr (kFp8) {
      Fp8LoaderLoop(kv8, idx_row, topk, L, n_pairs, sb, kv_policy, fp8_polling);
      CpAsyncWaitAllMem();
      return;
    }

    int idx[2][4];  // this thread's 4 rows of the pair's two blocks
    auto load_idx = [&](int pair) {
#pragma unroll
      for (int k = 0; k < 2; ++k) {
#pragma unroll
        for (int p = 0; p < 4; ++p) {
          const int j = (2 * pair + k) * kBlockKeys + lrow + 16 * p;
          const int v = j < topk ? __ldg(idx_row + j) : -1;
          idx[k][p] = (v >= 0 && v < L) ? v : -1;
        }
      }
    };
    auto gather = [&](int stage, int b0, int b1) {
      if (skip_gathers) return;  // experiment: the consumers compute on whatever the stage holds
      const uint32_t dst = sb + Plan::kKv + stage * kTileBytes + swz;
#pragma unroll
      for (int p = 0; p < 4; ++p) {
        const int v = idx[stage][p];
        const __nv_bfloat16* src = kv + (static_cast<int64_t>(v < 0 ? 0 : v) * kDqk + lc * 8);
        const uint32_t row_dst = dst + (lrow + 16 * p) * 128;
        if (kv_evict_last) {
#pragma unroll
          for (int b = b0; b < b1; ++b) {
            CpAsync16ZeroFillL2PrefetchHint(row_dst + b * kBlockBytes, src + 64 * b, v >= 0, kv_policy);
          }
        } else {
#pragma unroll
          for (int b = b0; b < b1; ++b) CpAsync16ZeroFillL2Prefetch(row_dst + b * kBlockBytes, src + 64 * b, v >= 0);
        }
      }
    };
    // Optional L2 prefetch prefetch_pairs pairs ahead (SetWsExperiment): each thread takes one row of
    // the pair (thread lc of a row group: row lrow + 16 (lc & 3) of block lc >> 2) and prefetches its
    // nine 128-byte lines, so that the cp.async gathers, issued only once a half stage is free, hit
    // L2. The index is read one pair before its prefetch, so the loader never stalls on it.
    auto prefetch_idx = [&](int pair) {
      const int j = (2 * pair + (lc >> 2)) * kBlockKeys + lrow + 16 * (lc & 3);
      const int v = (pair < n_pairs && j < topk) ? __ldg(idx_row + j) : -1;
      return (v >= 0 && v < L) ? v : -1;
    };
    auto prefetch = [&](int v) {
      if (v >= 0) {
        const __nv_bfloat16* row = kv + static_cast<int64_t>(v) * kDqk;
#pragma unroll
        for (int b = 0; b < kColBlocks; ++b) PrefetchL2(row + 64 * b);
      }
    };
    for (int d = 1; d < prefetch_pairs; ++d) prefetch(prefetch_idx(d));
    int pf_v = prefetch_pairs > 0 ? prefetch_idx(prefetch_pairs) : -1;
    if (n_pairs > 0) load_idx(0);
    for (int i = 0; i < n_pairs; ++i) {
      prefetch(pf_v);  // pair i + prefetch_pairs
      if (prefetch_pairs > 0) pf_v = prefetch_idx(i + prefetch_pairs + 1);
      const uint32_t parity = (i & 1) ^ 1;  // the previous use's phase
      MbarWait(sb + Plan::Free(0, 0), parity);
      gather(0, 0, kLeftBlocks);
      CpAsyncMbarArrive(sb + Plan::Ready(0, 0));
      MbarWait(sb + Plan::Free(1, 1), parity);
      gather(1, kLeftBlocks, kColBlocks);
      CpAsyncMbarArrive(sb + Plan::Ready(1, 1));
      MbarWait(sb + Plan::Free(0, 1), parity);
      gather(0, kLeftBlocks, kColBlocks);
      CpAsyncMbarArrive(sb + Plan::Ready(0, 1));
      MbarWait(sb + Plan::Free(1, 0), parity);
      gather(1, 0, kLeftBlocks);
      CpAsyncMbarArrive(sb + Plan::Ready(1, 0));
      if (i + 1 < n_pairs) load_idx(i + 1);
    }
    CpAsyncWaitAllMem();
    return;
  }

  // ---------------- Consumers.
  SetMaxRegsAlloc<224>();
  const int wtid = tid & 127, warp = wtid >> 5, lane = tid & 31, qd = lane & 3;
  const int row0 = warp * 16 + (lane >> 2), row1 = row0 + 8;
  const uint32_t sQ = sb + Plan::kQ;
  const uint32_t kv0 = sb + Plan::kKv, kv1 = kv0 + kTileBytes;
  const uint32_t sP0 = sb + Plan::kP0, sP1 = sb + Plan::kP1;
  const Desc dq = MakeDesc(sQ, 16), dk0 = MakeDesc(kv0, 16), dk1 = MakeDesc(kv1, 16);
  const Desc dp0 = MakeDesc(sP0, 16), dp1 = MakeDesc(sP1, 16);
  const Desc dv0 = MakeDesc(kv0, kBlockBytes), dv1 = MakeDesc(kv1, kBlockBytes);
  const Desc dv0r = MakeDesc(kv0 + kLeftBlocks * kBlockBytes, kBlockBytes);
  const Desc dv1r = MakeDesc(kv1 + kLeftBlocks * kBlockBytes, kBlockBytes);

  float o[128];
#pragma unroll
  for (int i = 0; i < 128; ++i) o[i] = 0.f;
  float s[32];
  uint32_t pr[16];
  float m0 = -INFINITY, m1 = -INFINITY;  // the shared running max (rows row0, row1) after the last pair
  float l0 = 0.f, l1 = 0.f;              // this warpgroup's partial row sums (this thread's columns)
  MbarWait(sb + Plan::QBar(), 0);

  if (wg == 0) {
    uint2 mask = make_uint2(0u, 0u);
    // S of the first block, in halves: the left half runs while the right half lands. (Every path
    // issues the same wgmmas, and a wgmma.fence precedes each batch that follows a wait: otherwise
    // ptxas inserts its own and serialises every wgmma of the kernel.)
    if (n_pairs > 0) MbarWait(sb + Plan::Ready(0, 0), 0);
    FenceProxyAsync();
    FenceRegs(s);
    WgmmaFence();
    IssueS<0, kLeftBlocks>(s, dq, dk0, true);
    WgmmaCommit();
    if (n_pairs > 0) mask = ValidBits(idx_row, 0, topk, L, lane, qd);
    if (n_pairs > 0) MbarWait(sb + Plan::Ready(0, 1), 0);
    FenceProxyAsync();
    WgmmaFence();
    IssueS<kLeftBlocks, kColBlocks>(s, dq, dk0, false);
    WgmmaCommit();
    WgmmaWaitAll();
    FenceRegs(s);
    for (int i = 0; i < n_pairs; ++i) {
      // Softmax of block 2i against the running max; publish the new max for WG1.
      float bm0, bm1, sum0, sum1;
      MaskMax(s, mask, scale_log2, bm0, bm1);
      const float ma0 = NextMax(m0, bm0), ma1 = NextMax(m1, bm1);
      const float a0 = Rescale(m0, ma0), a1 = Rescale(m1, ma1);
      Exponentiate(s, scale_log2, ma0, ma1, sum0, sum1);
      l0 = l0 * a0 + sum0;
      l1 = l1 * a1 + sum1;
      if (qd == 0) {
        sM[row0] = ma0;
        sM[row1] = ma1;
      }
      ArriveNamed(kBarM0, kConsumerThreads);
      ScaleO(o, a0, a1);
      PackP(s, pr, 1.f, 1.f);
      // O[:, :256] += P0 V0 (P0 from registers); then stage 0's left half is free.
      FenceRegs(o);
      WgmmaFence();
      IssuePvRegs(o, pr, dv0);
      WgmmaCommit();
      WgmmaWaitAll();
      FenceRegs(o);
      MbarArrive(sb + Plan::Free(0, 0));
      // WG1's max: rescale P0 to it and share P0 (in stage 0's RoPE block, dead after S0).
      SyncNamed(kBarM1, kConsumerThreads);
      const float mb0 = sM[row0], mb1 = sM[row1];
      const float f0 = Rescale(ma0, mb0), f1 = Rescale(ma1, mb1);
      m0 = mb0;
      m1 = mb1;
      l0 *= f0;
      l1 *= f1;
      if (__any_sync(0xffffffffu, f0 != 1.f || f1 != 1.f)) PackP(s, pr, f0, f1);  // else pr holds P0 already
      StoreP(sP0, pr, row0, row1, qd);
      FenceProxyAsync();
      ArriveNamed(kBarP0, kConsumerThreads);
      ScaleO(o, f0, f1);
      // O[:, :256] += P1 V1 (P1 from WG1 through shared memory).
      SyncNamed(kBarP1, kConsumerThreads);
      FenceRegs(o);
      WgmmaFence();
      IssuePvSmem(o, dp1, dv1);
      WgmmaCommit();
      // S of block 2i + 2 while P1 V1 runs (past the last pair: a harmless S on stale data, so
      // that every path issues the same wgmmas); stage 1's left half is free once P1 V1 is done.
      const bool more = i + 1 < n_pairs;
      if (more) MbarWait(sb + Plan::Ready(0, 0), (i + 1) & 1);
      FenceProxyAsync();
      FenceRegs(s);
      WgmmaFence();
      IssueS<0, kLeftBlocks>(s, dq, dk0, true);
      WgmmaCommit();
      if (more) mask = ValidBits(idx_row, 2 * (i + 1), topk, L, lane, qd);
      WgmmaWait<1>();
      FenceRegs(o);
      MbarArrive(sb + Plan::Free(1, 0));
      if (more) MbarWait(sb + Plan::Ready(0, 1), (i + 1) & 1);
      FenceProxyAsync();
      WgmmaFence();
      IssueS<kLeftBlocks, kColBlocks>(s, dq, dk0, false);
      WgmmaCommit();
      WgmmaWaitAll();
      FenceRegs(s);
    }
  } else {
    for (int i = 0; i < n_pairs; ++i) {
      const uint32_t parity = i & 1;
      MbarWait(sb + Plan::Ready(1, 1), parity);
      FenceProxyAsync();
      FenceRegs(s);
      WgmmaFence();
      IssueS<kLeftBlocks, kColBlocks>(s, dq, dk1, true);
      WgmmaCommit();
      const uint2 mask = ValidBits(idx_row, 2 * i + 1, topk, L, lane, qd);
      MbarWait(sb + Plan::Ready(1, 0), parity);
      FenceProxyAsync();
      WgmmaFence();
      IssueS<0, kLeftBlocks>(s, dq, dk1, false);
      WgmmaCommit();
      WgmmaWaitAll();
      FenceRegs(s);
      float bm0, bm1, sum0, sum1;
      MaskMax(s, mask, scale_log2, bm0, bm1);
      // WG0's max after block 2i, extended with block 2i + 1: the pair's final max.
      SyncNamed(kBarM0, kConsumerThreads);
      const float ma0 = sM[row0], ma1 = sM[row1];
      __syncwarp();  // every lane of the quad has read m_a before lane 0 overwrites it
      const float mb0 = NextMax(ma0, bm0), mb1 = NextMax(ma1, bm1);
      if (qd == 0) {
        sM[row0] = mb0;
        sM[row1] = mb1;
      }
      ArriveNamed(kBarM1, kConsumerThreads);
      const float a0 = Rescale(m0, mb0), a1 = Rescale(m1, mb1);
      m0 = mb0;
      m1 = mb1;
      Exponentiate(s, scale_log2, mb0, mb1, sum0, sum1);
      l0 = l0 * a0 + sum0;
      l1 = l1 * a1 + sum1;
      ScaleO(o, a0, a1);
      PackP(s, pr, 1.f, 1.f);
      // O[:, 256:] += P1 V1 (registers), share P1, then O[:, 256:] += P0 V0 (from WG0).
      FenceRegs(o);
      WgmmaFence();
      IssuePvRegs(o, pr, dv1r);
      WgmmaCommit();
      StoreP(sP1, pr, row0, row1, qd);
      FenceProxyAsync();
      SyncNamed(kBarP0, kConsumerThreads);
      IssuePvSmem(o, dp0, dv0r);
      WgmmaCommit();
      ArriveNamed(kBarP1, kConsumerThreads);
      WgmmaWait<1>();
      MbarArrive(sb + Plan::Free(1, 1));
      WgmmaWaitAll();
      FenceRegs(o);
      MbarArrive(sb + Plan::Free(0, 1));
    }
  }

  // Row sums: over the quad, then over the two warpgroups.
  l0 += __shfl_xor_sync(0xffffffffu, l0, 1);
  l0 += __shfl_xor_sync(0xffffffffu, l0, 2);
  l1 += __shfl_xor_sync(0xffffffffu, l1, 1);
  l1 += __shfl_xor_sync(0xffffffffu, l1, 2);
  if (qd == 0) {
    sL[wg * 64 + row0] = l0;
    sL[wg * 64 + row1] = l1;
  }
  SyncNamed(kBarL, kConsumerThreads);
  const float tot0 = sL[row0] + sL[64 + row0], tot1 = sL[row1] + sL[64 + row1];
  const float inv0 = tot0 > 0.f ? 1.f / tot0 : 0.f, inv1 = tot1 > 0.f ? 1.f / tot1 : 0.f;
  // O through shared memory (Q's tile, dead now: the last S of both warpgroups has completed), so
  // that global stores are whole 16-byte chunks of 512-byte row segments. Warpgroup wg stages its
  // 64 x 256 half as rows of 512 bytes whose 16-byte chunks are XOR-swizzled by (row & 7): the
  // fragment writes (8 rows x 4 lanes per instruction) hit 32 distinct banks.
  const uint32_t stage = sb + Plan::kQ + wg * (64 * 512);
#pragma unroll
  for (int n = 0; n < 32; ++n) {
    StoreShared32(stage + row0 * 512 + ((n ^ (row0 & 7)) << 4) + 4 * qd, PackBf16(o[4 * n] * inv0, o[4 * n + 1] * inv0));
    StoreShared32(stage + row1 * 512 + ((n ^ (row1 & 7)) << 4) + 4 * qd,
                  PackBf16(o[4 * n + 2] * inv1, o[4 * n + 3] * inv1));
  }
  SyncNamed(kBarStage0 + wg, 128);  // this warpgroup's staging writes before its reads
  const uint8_t* stage_ptr = smem + Plan::kQ + wg * (64 * 512);
#pragma unroll 4
  for (int k = 0; k < 16; ++k) {
    const int chunk = k * 128 + wtid, r = chunk >> 5, c = chunk & 31;  // 32 chunks per row
    if (h0 + r < H) {
      const uint4 v = *reinterpret_cast<const uint4*>(stage_ptr + r * 512 + ((c ^ (r & 7)) << 4));
      __stcs(reinterpret_cast<uint4*>(out + (t * H + h0 + r) * kDv + wg * 256 + c * 8), v);  // streamed
    }
  }
  const int h_a = h0 + row0, h_b = h0 + row1;
  if (lse != nullptr && wg == 0 && qd == 0) {
    constexpr float kLn2 = 0.69314718055994531f;
    if (h_a < H) lse[t * H + h_a] = tot0 > 0.f ? (m0 + log2f(tot0)) * kLn2 : INFINITY;
    if (h_b < H) lse[t * H + h_b] = tot1 > 0.f ? (m1 + log2f(tot1)) * kLn2 : INFINITY;
  }
}

#else  // !INDEXCACHE_PTX_HAS_WGMMA

// (The same declaration as above, __restrict__ included: nvcc's host stubs of a kernel template
// must match the declaration of every compilation pass.)
template <bool kFp8>
__global__ void __launch_bounds__(kThreads, 1)
    SparseMlaWsKernel(const __nv_bfloat16* __restrict__, const __nv_bfloat16* __restrict__, const uint8_t* __restrict__,
                      const int32_t* __restrict__, int, int, int, int, float, __nv_bfloat16* __restrict__,
                      float* __restrict__, int, bool, bool, bool) {
  __trap();
}

#endif  // INDEXCACHE_PTX_HAS_WGMMA

}  // namespace

void LaunchWarpSpecialized(const SparseMlaCudaParams& p, cudaStream_t stream) {
  // The block max is taken on raw scores and scaled afterwards, which needs scale > 0; any other
  // scale (never used in practice) runs the two-warpgroup kernel, which scales first.
  if (!(p.scale > 0.f)) {  // (SparseMlaCuda refuses FP8 latents with such a scale)
    LaunchTwoWarpgroups(p, stream);
    return;
  }
  const int64_t head_groups = (p.H + kHeads - 1) / kHeads;
  const bool fp8 = p.kv_fp8 != nullptr;
  auto* kernel = fp8 ? SparseMlaWsKernel<true> : SparseMlaWsKernel<false>;
  CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, Plan::kBytes));
  constexpr float kLog2e = 1.4426950408889634f;
  kernel<<<static_cast<unsigned>(p.T * head_groups), kThreads, Plan::kBytes, stream>>>(
      p.q, p.kv, p.kv_fp8, p.indices, static_cast<int>(p.H), static_cast<int>(p.L), static_cast<int>(p.topk),
      static_cast<int>(head_groups), p.scale * kLog2e, p.out, p.lse, g_experiment.prefetch_pairs,
      g_experiment.skip_gathers, g_experiment.kv_evict_last, g_experiment.fp8_polling);
  CUDA_CHECK(cudaGetLastError());
}

void SetWsExperiment(const WsExperiment& e) {
  g_experiment = e;
  if (g_experiment.prefetch_pairs < 0) g_experiment.prefetch_pairs = 0;
}

}  // namespace sparse_mla
}  // namespace indexcache
