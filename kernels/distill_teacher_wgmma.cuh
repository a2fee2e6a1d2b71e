// The distillation loss's teacher phase on Hopper tensor cores (wgmma), the default teacher path of
// DistillLossCuda (kernels/distill_loss_cuda.h) on sm_90a. Included by distill_loss_cuda.cu only.
//
// Per query t and served layer j, the CTA's 256 threads (2 warpgroups) hold qa_j[t] in REGISTERS:
// warpgroup w owns heads [64 w, 64 w + 64), each thread the A fragments of its two heads over all
// DA <= 576 columns (36 k-steps x 4 registers). The key set streams through a 3-stage cp.async
// pipeline of 64-key tiles stored as 64-column blocks of 128-byte rows with the 128-byte swizzle
// (the layout of kernels/sparse_mla_cuda.cu), and each tile is one chain of 36 wgmma m64n64k16
// with A from registers: S[64 heads x 64 keys] per warpgroup. Why registers: qa_j[t] is
// loop-invariant over the whole key set, so keeping it out of shared memory leaves room for 3
// kv stages and halves the shared-memory bytes read per MMA (only B, the kv tile, is read; the
// mma.sync path re-read the query from shared memory for every 32 keys).
//  Sweep 1: each thread keeps an online max/sum (log2 domain) of its 2 heads over its columns; the
//           max moves only when a tile's max exceeds it by > 8 (fewer rescales; exact), and the 4
//           threads of a head merge at the end: lse per head, in registers.
//  Sweep 2: exp2(logit - lse) of the valid heads, summed over each warp's 16 heads by shuffles,
//           then over the 8 warps through a triple-buffered [8][64] shared array two tiles later
//           (no extra barrier per tile): pbar[key] (+)= p_j / S by thread key % 64 (deterministic),
//           and the teacher entropy sum p_j log p_j / S on the way (threads < 64, fp64).
// Ping-pong: warpgroup 1 does a tile's softmax work one tile late (after the next barrier, before
// its own MMAs of the next tile), so one warpgroup's exp2s overlap the other's MMAs; hence the
// column sums of tile i are complete only after barrier i + 2.
// Keys past the key set are zero-filled rows masked to -inf; heads past HA are zero rows excluded
// from pbar; columns past DA are zero in both operands.
#pragma once

#include <cmath>
#include <cstdint>

#include <cuda_bf16.h>

#include "kernels/ptx.cuh"

namespace indexcache {
namespace distill_wgmma {

constexpr int kKeys = 64;                          // keys per tile (the N of m64n64k16)
constexpr int kStages = 3;                         // kv tiles in flight
constexpr int kMaxDA = 576;                        // qa row held in registers: 36 k-steps
constexpr int kKSteps = kMaxDA / 16;
constexpr int kBlockBytes = 64 * 128;              // one 64-row x 64-column bf16 block
constexpr int kTileBytes = (kMaxDA / 64) * kBlockBytes;  // 73728: 64 keys x 576 columns
constexpr int kColBufs = 3;                        // column-sum buffers (tiles in flight, see below)
constexpr int kColBytes = kColBufs * 8 * kKeys * 4;  // float [3][8 warps][64 keys]
// Dynamic shared memory of the phase: 1024 B of alignment slack, the stages, the column sums.
constexpr int kSmemBytes = 1024 + kStages * kTileBytes + kColBytes;

// Byte offset of 16-byte chunk c (0..71) of row r (0..63) in a swizzled 64 x 576 tile.
__device__ __forceinline__ uint32_t SwizzledOffset(int r, int c) {
  return (c >> 3) * kBlockBytes + r * 128 + (((c & 7) ^ (r & 7)) << 4);
}

#if INDEXCACHE_PTX_HAS_WGMMA

// Issues the cp.async copies of tile rows [i0, i0 + 64) of the key list (n keys; keys == nullptr:
// key i is row i) of kv [*, DA] into the swizzled stage at shared address dst; rows past n and
// columns past DA are zero-filled. Thread tid copies rows tid/8 and tid/8 + 32, 16-byte chunks
// tid%8 + 8b: 8 consecutive threads read one 128-byte span of a row. The caller commits.
// Addressing: rows r and r + 32 have the same swizzle (r & 7), so every destination is one
// per-thread address plus an immediate (p * 4096 + b * 8192) = SwizzledOffset(r + 32p, c + 8b);
// written through SwizzledOffset, ptxas kept 18 separate addresses live and spilled them.
__device__ __forceinline__ void LoadTile(uint32_t dst, const __nv_bfloat16* kv, int DA, int i0, int n,
                                         const int32_t* keys, int tid) {
  const int ld_row = tid >> 3, ld_c = tid & 7;
  const uint32_t d0 = dst + ld_row * 128 + ((ld_c ^ (ld_row & 7)) << 4);
#pragma unroll
  for (int p = 0; p < 2; ++p) {
    const int i = i0 + ld_row + 32 * p;
    const bool valid = i < n;
    const int64_t key = valid ? (keys ? keys[i] : i) : 0;
    // Invalid chunks read nothing (src-size 0), so their source address needs no clamping.
    const __nv_bfloat16* src = kv + key * DA + ld_c * 8;
#pragma unroll
    for (int b = 0; b < kMaxDA / 64; ++b) {
      const bool ok = valid && (ld_c + 8 * b) * 8 < DA;
      ptx::CpAsync16ZeroFillMem(d0 + p * 32 * 128 + b * kBlockBytes, src + 64 * b, ok);
    }
  }
}

__device__ __forceinline__ uint32_t LoadQ32(const __nv_bfloat16* p, bool ok) {
  return ok ? __ldg(reinterpret_cast<const unsigned int*>(p)) : 0u;
}

// The teacher phase for query t (see the file comment). n >= 1 keys (keys: the sparse key list or
// nullptr), pbar: the CTA's slot (written for layer 0, added to after), *ent accumulates on
// threads < 64. sbase: the 1024-aligned shared address of the stages; s_col: the column sums.
// All 256 threads call it.
__device__ __forceinline__ void TeacherPhase(const __nv_bfloat16* const* attn_q, const __nv_bfloat16* const* attn_kv,
                                             int num_served, int64_t t, int HA, int DA, float scale2, int n,
                                             const int32_t* keys, float* pbar, uint32_t sbase, float* s_col,
                                             double* ent_out) {
  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5, wg = warp >> 2;
  const int row0 = (warp >> 2) * 64 + (warp & 3) * 16 + (lane >> 2), row1 = row0 + 8;
  const bool h0ok = row0 < HA, h1ok = row1 < HA;
  const int num_tiles = (n + kKeys - 1) / kKeys;
  const float inv_ha = 1.f / static_cast<float>(HA), inv_s = 1.f / static_cast<float>(num_served);
  double ent = *ent_out;

  // Threads < 64: pbar and entropy of tile `tile` from its column sums in buffer tile % 3.
  const auto reduce_tile = [&](int tile, int j) {
    if (tid < kKeys) {
      const int i = tile * kKeys + tid;
      if (i < n) {
        const float* cs = s_col + (tile % kColBufs) * 8 * kKeys + tid;
        float sum = 0.f;
#pragma unroll
        for (int w = 0; w < 8; ++w) sum += cs[w * kKeys];
        const float pj = sum * inv_ha;
        const float contrib = pj * inv_s;
        pbar[i] = j == 0 ? contrib : pbar[i] + contrib;
        if (pj > 0.f) ent += static_cast<double>(pj) * log(static_cast<double>(pj)) * inv_s;
      }
    }
  };

  for (int j = 0; j < num_served; ++j) {
    const __nv_bfloat16* kv = attn_kv[j];
    // This thread's A fragments of qa_j[t] (heads row0, row1), straight from global memory.
    uint32_t qf[kKSteps][4];
    {
      const __nv_bfloat16* q0 = attn_q[j] + (t * HA + (h0ok ? row0 : 0)) * DA + 2 * (lane & 3);
      const __nv_bfloat16* q1 = attn_q[j] + (t * HA + (h1ok ? row1 : 0)) * DA + 2 * (lane & 3);
      const int c0 = 2 * (lane & 3);
#pragma unroll
      for (int ks = 0; ks < kKSteps; ++ks) {
        const int c = ks * 16;
        qf[ks][0] = LoadQ32(q0 + c, h0ok && c + c0 < DA);
        qf[ks][1] = LoadQ32(q1 + c, h1ok && c + c0 < DA);
        qf[ks][2] = LoadQ32(q0 + c + 8, h0ok && c + 8 + c0 < DA);
        qf[ks][3] = LoadQ32(q1 + c + 8, h1ok && c + 8 + c0 < DA);
      }
    }
    float m0 = -INFINITY, m1 = -INFINITY, l0 = 0.f, l1 = 0.f;  // sweep 1, this thread's columns
    float lse0 = 0.f, lse1 = 0.f;                              // sweep 2
    float acc[32];  // S of one tile; acc[4 nn + e]: head row0 (e < 2) or row1, key 8 nn + 2 (lane % 4) + (e & 1)
    int sweep = 0;
    // The softmax work of `tile` on acc: sweep 0 updates the online max/sum, sweep 1 writes the
    // warp's column sums of exp2(logit - lse) to s_col buffer tile % 3.
    const auto process = [&](int tile) {
      const int nv = min(kKeys, n - tile * kKeys);
      if (sweep == 0) {
        float mx0 = -INFINITY, mx1 = -INFINITY;
#pragma unroll
        for (int nn = 0; nn < 8; ++nn) {
#pragma unroll
          for (int e = 0; e < 2; ++e) {
            const bool ok = 8 * nn + 2 * (lane & 3) + e < nv;
            acc[4 * nn + e] = ok ? acc[4 * nn + e] * scale2 : -INFINITY;
            acc[4 * nn + 2 + e] = ok ? acc[4 * nn + 2 + e] * scale2 : -INFINITY;
            mx0 = fmaxf(mx0, acc[4 * nn + e]);
            mx1 = fmaxf(mx1, acc[4 * nn + 2 + e]);
          }
        }
        // The base moves only when the tile's max exceeds it by more than 8 (base 2): every term
        // stays <= 256, so l cannot overflow, and most tiles skip the rescale.
        const float n0 = mx0 > m0 + 8.f ? mx0 : m0, n1 = mx1 > m1 + 8.f ? mx1 : m1;
        if (n0 != -INFINITY) {
          float s0 = 0.f;
#pragma unroll
          for (int nn = 0; nn < 8; ++nn) s0 += exp2f(acc[4 * nn] - n0) + exp2f(acc[4 * nn + 1] - n0);
          l0 = (n0 == m0 ? l0 : l0 * exp2f(m0 - n0)) + s0;
          m0 = n0;
        }
        if (n1 != -INFINITY) {
          float s1 = 0.f;
#pragma unroll
          for (int nn = 0; nn < 8; ++nn) s1 += exp2f(acc[4 * nn + 2] - n1) + exp2f(acc[4 * nn + 3] - n1);
          l1 = (n1 == m1 ? l1 : l1 * exp2f(m1 - n1)) + s1;
          m1 = n1;
        }
      } else {
        float cs[16];
#pragma unroll
        for (int nn = 0; nn < 8; ++nn) {
#pragma unroll
          for (int e = 0; e < 2; ++e) {
            const bool ok = 8 * nn + 2 * (lane & 3) + e < nv;
            const float p0 = ok && h0ok ? exp2f(acc[4 * nn + e] * scale2 - lse0) : 0.f;
            const float p1 = ok && h1ok ? exp2f(acc[4 * nn + 2 + e] * scale2 - lse1) : 0.f;
            float v = p0 + p1;
            v += __shfl_xor_sync(0xffffffffu, v, 4);
            v += __shfl_xor_sync(0xffffffffu, v, 8);
            v += __shfl_xor_sync(0xffffffffu, v, 16);
            cs[2 * nn + e] = v;
          }
        }
        if (lane < 4) {
          float* dst = s_col + (tile % kColBufs) * 8 * kKeys + warp * kKeys + 2 * lane;
#pragma unroll
          for (int nn = 0; nn < 8; ++nn) *reinterpret_cast<float2*>(dst + 8 * nn) = make_float2(cs[2 * nn], cs[2 * nn + 1]);
        }
      }
    };
    for (sweep = 0; sweep < 2; ++sweep) {
      __syncthreads();  // the stages and s_col are free (previous sweep, layer or phase)
#pragma unroll
      for (int s = 0; s < kStages - 1; ++s) {
        if (s < num_tiles) LoadTile(sbase + s * kTileBytes, kv, DA, s * kKeys, n, keys, tid);
        ptx::CpAsyncCommitMem();
      }
      for (int tile = 0; tile < num_tiles; ++tile) {
        // Tile `tile` landed (own copies), visible to wgmma, everyone's copies done; every wgmma of
        // tile - 1 completed in both warpgroups, so its stage may be refilled.
        ptx::CpAsyncWait<kStages - 2>();
        ptx::FenceProxyAsync();
        __syncthreads();
        // Tile - 2's column sums are complete (warpgroup 1 wrote them before this barrier).
        if (sweep == 1 && tile >= 2) reduce_tile(tile - 2, j);
        {
          const int nt = tile + kStages - 1;
          if (nt < num_tiles) LoadTile(sbase + (nt % kStages) * kTileBytes, kv, DA, nt * kKeys, n, keys, tid);
          ptx::CpAsyncCommitMem();
        }
        // Ping-pong: warpgroup 1 runs one tile behind in its softmax work (tile - 1 now, before
        // its MMAs of this tile), so its exp2s overlap warpgroup 0's MMAs and vice versa; the
        // tensor cores are not left idle while both warpgroups do softmax work.
        if (wg == 1 && tile > 0) process(tile - 1);
        // One descriptor per tile; k-step ks adds its byte offset / 16 to the start-address field
        // (bits 0-13; shared addresses < 256 KiB cannot carry out of it). 36 separately computed
        // descriptors were kept live and spilled.
        const uint64_t desc = ptx::WgDesc(sbase + (tile % kStages) * kTileBytes);
#pragma unroll
        for (int e = 0; e < 32; ++e) acc[e] = 0.f;
        ptx::FenceRegs(acc);
        ptx::WgmmaFence();
#pragma unroll
        for (int ks = 0; ks < kKSteps; ++ks) {
          // All 36 k-steps, whatever DA (columns past it are zero in both operands): a chain without
          // branches, which ptxas keeps asynchronous (a conditional wgmma makes it serialise).
          ptx::WgmmaM64N64K16RS(acc, qf[ks][0], qf[ks][1], qf[ks][2], qf[ks][3],
                                desc + static_cast<uint64_t>(((ks >> 2) * kBlockBytes + (ks & 3) * 32) >> 4), ks != 0);
        }
        ptx::WgmmaCommit();
        ptx::WgmmaWaitAll();
        ptx::FenceRegs(acc);
        if (wg == 0) process(tile);
      }
      if (wg == 1) process(num_tiles - 1);
      ptx::CpAsyncWaitAllMem();
      if (sweep == 0) {
        // Merge the 4 threads of each head: lse = M + log2(sum l_i 2^(m_i - M)). Every head has a
        // valid key in column 0 (lane % 4 == 0), so M is finite.
#pragma unroll
        for (int o = 1; o <= 2; o <<= 1) {
          const float om0 = __shfl_xor_sync(0xffffffffu, m0, o), ol0 = __shfl_xor_sync(0xffffffffu, l0, o);
          const float om1 = __shfl_xor_sync(0xffffffffu, m1, o), ol1 = __shfl_xor_sync(0xffffffffu, l1, o);
          const float M0 = fmaxf(m0, om0), M1 = fmaxf(m1, om1);
          l0 = (m0 == -INFINITY ? 0.f : l0 * exp2f(m0 - M0)) + (om0 == -INFINITY ? 0.f : ol0 * exp2f(om0 - M0));
          l1 = (m1 == -INFINITY ? 0.f : l1 * exp2f(m1 - M1)) + (om1 == -INFINITY ? 0.f : ol1 * exp2f(om1 - M1));
          m0 = M0;
          m1 = M1;
        }
        lse0 = m0 + log2f(l0);
        lse1 = m1 + log2f(l1);
      } else {
        __syncthreads();  // the last two tiles' column sums are written
        if (num_tiles >= 2) reduce_tile(num_tiles - 2, j);
        reduce_tile(num_tiles - 1, j);
      }
    }
  }
  *ent_out = ent;
}

#else  // !INDEXCACHE_PTX_HAS_WGMMA

__device__ __forceinline__ void TeacherPhase(const __nv_bfloat16* const*, const __nv_bfloat16* const*, int, int64_t,
                                             int, int, float, int, const int32_t*, float*, uint32_t, float*, double*) {
  __trap();
}

#endif  // INDEXCACHE_PTX_HAS_WGMMA

}  // namespace distill_wgmma
}  // namespace indexcache
