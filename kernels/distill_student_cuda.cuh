// Phase 2 of the fused distillation-loss kernel, the student (the Full layer's indexer): its
// scores over the query's keys, their log-sum-exp, dI = P - pbar, and the backward into grad_q,
// grad_k and grad_w. Two implementations (DistillLossCudaParams::student_impl): the tiled student
// (StudentScoresAndGradients) and the warp-keys student (StudentWarpKeys); both add grad_k with
// AddGradKTile. Included by distill_loss_cuda.cu only (see distill_loss_cuda_common.cuh).
#pragma once

#include <cmath>
#include <cstdint>

#include <cuda_bf16.h>

#include "kernels/distill_loss_cuda_common.cuh"

namespace indexcache {
namespace {

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

}  // namespace
}  // namespace indexcache
