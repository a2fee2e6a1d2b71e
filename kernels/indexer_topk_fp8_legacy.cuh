// The first FP8 indexer main kernel (v0, "legacy": two math warpgroups of two accumulators;
// kernels/indexer_topk_fp8_cuda.cu describes it and keeps it selectable). Internal to that file,
// which includes it after defining the TOPK_SELECT_* macros.
#pragma once

#include "kernels/indexer_topk_fp8_common.cuh"

namespace indexcache {
namespace indexer_topk {
namespace {

__global__ void __launch_bounds__(kThreads, 1) IndexerTopkFp8Kernel(const Fp8Args a) {
#if INDEXER_TOPK_HAS_WGMMA
  using Plan = Fp8MainSmemPlan;
  extern __shared__ __align__(16) uint8_t smem_raw[];
  const uint32_t raw_addr = static_cast<uint32_t>(__cvta_generic_to_shared(smem_raw));
  const uint32_t pad = ((raw_addr + 1023u) & ~1023u) - raw_addr;
  uint8_t* smem = smem_raw + pad;
  const uint32_t sbase = raw_addr + pad;
  __shared__ SelectSmem sel;
  __shared__ int s_cnt[kWarps];
  __shared__ float s_thr[kWarps];
  __shared__ int s_end[kWarps];
  __shared__ __align__(16) float s_w[kWarps][kMaxHeads];
  // Set when a candidate position falls past its buffer (a bookkeeping bug); the kernel traps after
  // the tile. (A trap inside the epilogue's divergent branch makes ptxas serialise the wgmma
  // instructions, warning C7518; see also TOPK_SELECT_OVERFLOW_TRAP_ONLY above.)
  __shared__ int s_overflow;

  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  const int g = lane >> 2, t4 = lane & 3;
  const int wg = warp >> 2, wq = warp & 3;
  const int64_t t0 = static_cast<int64_t>(blockIdx.x) * kWarps;

  if (tid == 0) s_overflow = 0;
  if (tid < kWarps) {
    const int64_t t = t0 + tid;
    s_end[tid] = t < a.T ? KeyEndOf(a.key_end, a.query_offset, a.L, t) : 0;
    s_cnt[tid] = 0;
    s_thr[tid] = -INFINITY;
  }
  // Head weights with the query scales folded in (qs > 0, so it moves out of the ReLU).
  for (int i = tid; i < kWarps * kMaxHeads; i += kThreads) {
    const int qi = i / kMaxHeads, h = i % kMaxHeads;
    const int64_t t = t0 + qi;
    s_w[qi][h] = (t < a.T && h < a.H) ? a.weights[t * a.H + h] * a.q_scale[t * a.H + h] * a.abs_scale : 0.f;
  }
  // The 8 queries, swizzled (8 chunks of 16 B per 128-byte row); heads >= H and queries >= T are zero.
  for (int c = tid; c < kWarps * 64 * 8; c += kThreads) {
    const int qi = c >> 9, h = (c >> 3) & 63, ch = c & 7;
    const int64_t t = t0 + qi;
    uint4 v = make_uint4(0u, 0u, 0u, 0u);
    if (t < a.T && h < a.H) {
      v = __ldg(reinterpret_cast<const uint4*>(a.q + (t * a.H + h) * Plan::kD) + ch);
      if (a.negate_q) {
        v.x ^= 0x80808080u;
        v.y ^= 0x80808080u;
        v.z ^= 0x80808080u;
        v.w ^= 0x80808080u;
      }
    }
    *reinterpret_cast<uint4*>(smem + Plan::kQOff + qi * Plan::kQBytes + h * 128 + ((ch ^ (h & 7)) << 4)) = v;
  }
  __syncthreads();
  int max_end = 0;
#pragma unroll
  for (int w = 0; w < kWarps; ++w) max_end = max(max_end, s_end[w]);
  const int num_tiles = (max_end + Plan::kTile - 1) / Plan::kTile;

  auto load_tile = [&](int tile) {
    uint8_t* dst = smem + Plan::StageOff(tile);
    const int64_t key0 = static_cast<int64_t>(tile) * Plan::kTile;
#pragma unroll
    for (int c = tid; c < Plan::kTile * 8; c += kThreads) {
      const int row = c >> 3, ch = c & 7;
      int64_t key = key0 + row;
      if (key >= a.L) key = a.L - 1;  // rows past L are never valid: any finite data will do
      CpAsync16(dst + row * 128 + ((ch ^ (row & 7)) << 4), a.k + key * Plan::kD + ch * 16);
    }
  };

#pragma unroll
  for (int s = 0; s < Plan::kStages - 1; ++s) {
    if (s < num_tiles) load_tile(s);
    CpAsyncCommit();
  }

  const int trigger = a.topk + (a.cap - Plan::kTile - a.topk) / 2;
  // This lane's key within a 64-key half: lane t4 == 0 offers key g, t4 == 1 key g + 8 (t4 >= 2
  // offers none).
  const int lane_key = wq * 16 + g + (t4 == 1 ? 8 : 0);
  float acc0[64], acc1[64];
  for (int tile = 0; tile < num_tiles; ++tile) {
    CpAsyncWait<Plan::kStages - 2>();
    FenceProxyAsync();
    __syncthreads();
    if (tile + Plan::kStages - 1 < num_tiles) load_tile(tile + Plan::kStages - 1);
    CpAsyncCommit();

    const int key0 = tile * Plan::kTile;
    const uint32_t key_stage = sbase + Plan::StageOff(tile);
    const uint32_t q_wg = sbase + Plan::kQOff + (4 * wg) * Plan::kQBytes;
    constexpr int kQuarters = Plan::kTile / 64;  // 64-key A operands per tile
    // The key scales of this lane's keys (one per 64-key quarter), read while the first steps run.
    float ks[kQuarters];
#pragma unroll
    for (int hf = 0; hf < kQuarters; ++hf) {
      ks[hf] = __ldg(a.k_scale + min(key0 + hf * 64 + lane_key, static_cast<int>(a.L) - 1));
    }
    // Steps st = 2 hf + p: queries 4wg + 2p and 4wg + 2p + 1 (N = 128), keys [64 hf, 64 hf + 64)
    // of the tile; two steps in flight.
    auto issue = [&](float (&acc)[64], int st) {
      WgIssueFp8(acc, key_stage + (st >> 1) * (64 * 128), q_wg + (st & 1) * 2 * Plan::kQBytes);
    };
    // Epilogue of step st: for both queries of the step, the lane's key's head sum. The sums run in
    // four independent FMA chains per key and both queries' math comes before their shuffles: the
    // single 32-FMA chain per key of the bf16 kernel left the warps stalled on the FMA latency
    // (Nsight Compute: 2 warps per scheduler, 1.6 of 5.1 cycles per issue on fixed-latency
    // dependencies, 36 % issue slots busy). The FP8 scores need not match the bf16 bits.
    auto epilogue = [&](float (&acc)[64], int st) {
      float sum[2];
#pragma unroll
      for (int sub = 0; sub < 2; ++sub) {
        const int qw = 4 * wg + 2 * (st & 1) + sub;
        float lo[4] = {0.f, 0.f, 0.f, 0.f}, hi[4] = {0.f, 0.f, 0.f, 0.f};
#pragma unroll
        for (int j = 0; j < 8; ++j) {
          const float2 wv = *reinterpret_cast<const float2*>(&s_w[qw][8 * j + 2 * t4]);  // one LDS.64
          const int c = 2 * (j & 1);
          lo[c] = fmaf(wv.x, fmaxf(acc[32 * sub + 4 * j + 0], 0.f), lo[c]);
          lo[c + 1] = fmaf(wv.y, fmaxf(acc[32 * sub + 4 * j + 1], 0.f), lo[c + 1]);
          hi[c] = fmaf(wv.x, fmaxf(acc[32 * sub + 4 * j + 2], 0.f), hi[c]);
          hi[c + 1] = fmaf(wv.y, fmaxf(acc[32 * sub + 4 * j + 3], 0.f), hi[c + 1]);
        }
        const float s_lo = (lo[0] + lo[1]) + (lo[2] + lo[3]);
        const float s_hi = (hi[0] + hi[1]) + (hi[2] + hi[3]);
        // Quad reduction in three shuffles: odd lanes keep the hi key and send lo, even lanes the
        // reverse; after the xor-2 step lane t4 == 0 holds key g's sum and t4 == 1 key g + 8's.
        const bool odd = (t4 & 1) != 0;
        sum[sub] = (odd ? s_hi : s_lo) + __shfl_xor_sync(0xffffffffu, odd ? s_lo : s_hi, 1);
      }
#pragma unroll
      for (int sub = 0; sub < 2; ++sub) sum[sub] += __shfl_xor_sync(0xffffffffu, sum[sub], 2);
#pragma unroll
      for (int sub = 0; sub < 2; ++sub) {
        const int qw = 4 * wg + 2 * (st & 1) + sub;
        const int end = s_end[qw];
        const float thr = s_thr[qw];
        const int key = key0 + (st >> 1) * 64 + lane_key;
        const float sc = sum[sub] * ks[st >> 1];
        const bool pass = t4 < 2 && key < end && sc > thr;
        const uint32_t ballot = __ballot_sync(0xffffffffu, pass);
        if (ballot) {
          int base = 0;
          if (lane == 0) base = atomicAdd(&s_cnt[qw], __popc(ballot));
          base = __shfl_sync(0xffffffffu, base, 0);
          if (pass) {
            const int64_t tq = t0 + qw;  // pass implies key < end, so tq < T
            const int pos = base + __popc(ballot & ((1u << lane) - 1u));
            if (pos < a.cap) {
              a.cand_scores[tq * a.cap + pos] = sc;
              a.cand_idx[tq * a.cap + pos] = key;
            } else {
              s_overflow = 1;  // reported after the tile (see s_overflow)
            }
          }
        }
      }
    };
    // Ping-pong over the 2 * kQuarters steps: the epilogue of one accumulator runs while the other's
    // wgmma group is in flight (and the other warpgroup's).
    constexpr int kSteps = 2 * kQuarters;
    issue(acc0, 0);
    issue(acc1, 1);
#pragma unroll
    for (int st = 0; st < kSteps; st += 2) {
      WgmmaWait<1>();
      FenceRegs(acc0);
      epilogue(acc0, st);
      if (st + 2 < kSteps) {
        issue(acc0, st + 2);
        WgmmaWait<1>();
      } else {
        WgmmaWait<0>();
      }
      FenceRegs(acc1);
      epilogue(acc1, st + 1);
      if (st + 3 < kSteps) issue(acc1, st + 3);
    }

    // As in the bf16 variant: each warpgroup waits for its own four warps' candidate counts, then
    // the CTA compacts the buffers that could overflow on the next tile (in the scratch region).
    WarpgroupBarrier(wg);
    const bool my_query_full = wq == 0 && lane < 4 && s_cnt[4 * wg + lane] + Plan::kTile > a.cap;
    if (__syncthreads_or(my_query_full)) {
      uint32_t* s_key = reinterpret_cast<uint32_t*>(smem + Plan::kScratchOff);
      int32_t* s_idx = reinterpret_cast<int32_t*>(s_key + a.cap);
      for (int w = 0; w < kWarps; ++w) {
        const int n = s_cnt[w];
        if (n > trigger) {
          const int64_t tw = t0 + w;
          float nt;
          const int kept = CompactCandidatesBin(a.cand_scores + tw * a.cap, a.cand_idx + tw * a.cap, n, a.topk,
                                                a.topk + Plan::kTile, s_key, s_idx, sel, &nt);
          if (tid == 0) {
            s_cnt[w] = kept;
            s_thr[w] = nt;
          }
        }
      }
      __syncthreads();
      if (tid < kWarps && s_cnt[tid] + Plan::kTile > a.cap) {
        CandidateOverflow("fp8 after compaction", t0 + tid, s_cnt[tid], a.cap);
      }
    }
    if (s_overflow != 0) CandidateOverflow("fp8", t0, 0, a.cap);  // after the barrier above
  }
  CpAsyncWait<0>();
  __syncthreads();
  if (tid < kWarps && t0 + tid < a.T) a.cand_count[t0 + tid] = s_cnt[tid];
#else
  __trap();
#endif
}

}  // namespace
}  // namespace indexer_topk
}  // namespace indexcache
