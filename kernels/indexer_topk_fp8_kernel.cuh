// The generalised FP8 indexer main kernel (IndexerTopkFp8KernelT: the default v7 and the fallback
// v3 are instances) and its half-CTA compaction. Internal to kernels/indexer_topk_fp8_cuda.cu, which
// includes it after defining the TOPK_SELECT_* macros.
#pragma once

#include "kernels/indexer_topk_fp8_common.cuh"

namespace indexcache {
namespace indexer_topk {
namespace {

// CompactCandidatesBin (kernels/topk_select.cuh) for one half of a 512-thread CTA: 256 threads
// (local ids ltid 0..255) over named barrier `bar`, with a scratch of keys only (n words, not 2n),
// so that both halves of the four-warpgroup kernel compact a query each at the same time in the
// scratch one compaction used to take. The same selection: every entry whose key is >= the lower
// edge of the radix bin that holds the r-th best key, stopping as soon as that keeps <= limit
// entries; *new_thr = that edge. The indices are read back from the buffer in the write-back (each
// 256-entry chunk is read before any of it is overwritten). Returns the kept count, or -1 where the
// bins cannot get that small or the edge is not a safe float (the caller then runs the exact
// CompactCandidates); the buffer is unchanged then.
__device__ __forceinline__ void HalfSync(int bar) { asm volatile("bar.sync %0, 256;" ::"r"(bar) : "memory"); }

__device__ int CompactKeysBinHalf(float* gs, int32_t* gi, int n, int r, int limit, uint32_t* s_key, SelectSmem& sm,
                                  int bar, int ltid, float* new_thr) {
  const int lane = ltid & 31, warp = ltid >> 5;
  uint32_t mn = 0xffffffffu, mx = 0u;
  // 16-byte loads: the buffers start 16-byte aligned (cap % 4 == 0).
  for (int i = 4 * ltid; i < n; i += 4 * kSelectThreads) {
    uint32_t k4[4];
    if (i + 3 < n) {
      const float4 v = *reinterpret_cast<const float4*>(gs + i);
      k4[0] = OrderedKey(v.x);
      k4[1] = OrderedKey(v.y);
      k4[2] = OrderedKey(v.z);
      k4[3] = OrderedKey(v.w);
      *reinterpret_cast<uint4*>(s_key + i) = make_uint4(k4[0], k4[1], k4[2], k4[3]);
#pragma unroll
      for (int j = 0; j < 4; ++j) {
        mn = min(mn, k4[j]);
        mx = max(mx, k4[j]);
      }
    } else {
      for (int j = i; j < n; ++j) {
        const uint32_t k = OrderedKey(gs[j]);
        s_key[j] = k;
        mn = min(mn, k);
        mx = max(mx, k);
      }
    }
  }
  mn = __reduce_min_sync(0xffffffffu, mn);
  mx = __reduce_max_sync(0xffffffffu, mx);
  if (lane == 0) {
    sm.red_min[warp] = mn;
    sm.red_max[warp] = mx;
  }
  HalfSync(bar);
  mn = 0xffffffffu;
  mx = 0u;
#pragma unroll
  for (int w = 0; w < kSelectWarps; ++w) {
    mn = min(mn, sm.red_min[w]);
    mx = max(mx, sm.red_max[w]);
  }
  int hi = (mn == mx) ? -1 : 31 - __clz(mn ^ mx);
  auto mask_above = [](int b) -> uint32_t { return b >= 31 ? 0u : ~((2u << b) - 1u); };
  uint32_t prefix = hi < 0 ? mx : (mx & mask_above(hi));
  int rem = r;
  bool done = false;
  uint32_t low = 0;
  int kept = n;
  while (hi >= 0) {
    const int sh = hi >= 7 ? hi - 7 : 0;
    const uint32_t dmask = (2u << (hi - sh)) - 1u;
    const uint32_t hmask = mask_above(hi);
    sm.hist[ltid] = 0;
    HalfSync(bar);
    for (int i = 4 * ltid; i < n; i += 4 * kSelectThreads) {
      if (i + 3 < n) {
        const uint4 v = *reinterpret_cast<const uint4*>(s_key + i);
        if ((v.x & hmask) == prefix) atomicAdd(&sm.hist[(v.x >> sh) & dmask], 1u);
        if ((v.y & hmask) == prefix) atomicAdd(&sm.hist[(v.y >> sh) & dmask], 1u);
        if ((v.z & hmask) == prefix) atomicAdd(&sm.hist[(v.z >> sh) & dmask], 1u);
        if ((v.w & hmask) == prefix) atomicAdd(&sm.hist[(v.w >> sh) & dmask], 1u);
      } else {
        for (int j = i; j < n; ++j) {
          const uint32_t k = s_key[j];
          if ((k & hmask) == prefix) atomicAdd(&sm.hist[(k >> sh) & dmask], 1u);
        }
      }
    }
    HalfSync(bar);
    const int d = 255 - ltid;
    const uint32_t h = sm.hist[d];
    uint32_t incl = h;
#pragma unroll
    for (int o = 1; o < 32; o <<= 1) {
      const uint32_t v = __shfl_up_sync(0xffffffffu, incl, o);
      if (lane >= o) incl += v;
    }
    if (lane == 31) sm.warp_tot[warp] = incl;
    HalfSync(bar);
    for (int w = 0; w < warp; ++w) incl += sm.warp_tot[w];
    const uint32_t excl = incl - h;
    if (h > 0 && excl < static_cast<uint32_t>(rem) && static_cast<uint32_t>(rem) <= incl) {
      sm.bcast[0] = static_cast<uint32_t>(d);
      sm.bcast[1] = excl;
      sm.bcast[2] = h;
    }
    HalfSync(bar);
    prefix |= sm.bcast[0] << sh;
    rem -= static_cast<int>(sm.bcast[1]);
    kept = (r - rem) + static_cast<int>(sm.bcast[2]);
    hi = sh - 1;
    HalfSync(bar);
    if (kept <= limit) {
      low = prefix;
      done = low >= 0x00800000u && low != 0x7fffffffu;
      break;
    }
  }
  if (!done) return -1;
  if (ltid == 0) sm.counter = 0;
  HalfSync(bar);
  for (int base = 0; base < n; base += kSelectThreads) {
    const int i = base + ltid;
    bool keep = false;
    uint32_t k = 0;
    int32_t idx = 0;
    if (i < n) {
      k = s_key[i];
      keep = k >= low;
      if (keep) idx = gi[i];
    }
    const uint32_t ballot = __ballot_sync(0xffffffffu, keep);
    int pos = 0;
    if (lane == 0 && ballot) pos = atomicAdd(&sm.counter, __popc(ballot));
    pos = __shfl_sync(0xffffffffu, pos, 0) + __popc(ballot & ((1u << lane) - 1u));
    HalfSync(bar);  // the chunk's indices are read before any of its slots is overwritten
    if (keep) {
      gs[pos] = KeyToFloat(k);
      gi[pos] = idx;
    }
  }
  HalfSync(bar);
  if (ltid == 0 && sm.counter != kept) CandidateOverflow("compaction count", -1, sm.counter, kept);
  *new_thr = KeyToFloat(low);
  return kept;
}

// The FP8 main kernel, generalised from the first one (v0, removed; kFp8Variants lists the instances
// kept; the template parameters that only the removed ones used stay, documented):
//  - kMathWgs warpgroups (2: 256 threads; 4: 512 threads, a quarter of the registers each), each
//    owning 8 / kMathWgs of the CTA's 8 queries;
//  - a wgmma step is 64 keys x kQPerAcc queries (N = 64 kQPerAcc), kAccs accumulators per thread
//    (2: one accumulator's epilogue runs while the other's wgmma group is in flight; 1: issue, wait,
//    epilogue, and the overlap comes from the other warpgroups only);
//  - descriptors built once and advanced by adding offsets to their low word (v0
//    recomputed the masks and shifts for each of the 8 descriptors of a step);
//  - the head sum, threshold and candidate appends are v0's, in the same order, so
//    every variant produces the same scores bit for bit and hence the same output.
// kTrim (fewer instructions per step, same bits): the head weights laid out per lane (four LDS.128
// per query instead of eight LDS.64), each query's key end and threshold read once per tile, and
// 32-bit candidate offsets (T * cap < 2^31, checked by the host).
// The per-tile cp.async pipeline, the compaction (threads 0..255) and the overflow checks are
// v0's. a.final_compact: before the counts are written, every buffer with more than
// topk + kTile entries is compacted (CompactCandidatesBin) so that the finalize kernel reads at most
// that many (its scratch shrinks, more CTAs per SM).
template <int kMathWgs, int kQPerAcc, int kAccs, bool kTrim, bool kPairCompact = false, bool kSplit = false,
          bool kOneBar = false, bool kAbs = false>
__global__ void __launch_bounds__(128 * kMathWgs, 1) IndexerTopkFp8KernelT(const Fp8Args a) {
#if INDEXER_TOPK_HAS_WGMMA
  using Plan = Fp8MainSmemPlan;
  constexpr int kNT = 128 * kMathWgs;
  constexpr int kQPerWg = kWarps / kMathWgs;  // queries of one warpgroup
  constexpr int kSPQ = kQPerWg / kQPerAcc;    // steps per 64-key quarter
  constexpr int kAccN = 32 * kQPerAcc;        // accumulator floats per thread
  constexpr int kQuarters = Plan::kTile / 64;
  constexpr int kSteps = kQuarters * kSPQ;
  static_assert(kSteps % 2 == 0, "two accumulators alternate");
  static_assert(!kPairCompact || kMathWgs == 4, "pair compaction: two halves of 256 threads");
  static_assert(!kAbs || kTrim, "the |x| form keeps half weights in the per-lane layout");
  extern __shared__ __align__(16) uint8_t smem_raw[];
  const uint32_t raw_addr = static_cast<uint32_t>(__cvta_generic_to_shared(smem_raw));
  const uint32_t pad = ((raw_addr + 1023u) & ~1023u) - raw_addr;
  uint8_t* smem = smem_raw + pad;
  const uint32_t sbase = raw_addr + pad;
  __shared__ SelectSmem sel;
  __shared__ SelectSmem sel_half[kPairCompact ? 2 : 1];
  __shared__ int s_exact[kWarps];  // kPairCompact: the queries whose bin compaction failed
  __shared__ int s_cnt[kWarps];
  __shared__ float s_thr[kWarps];
  __shared__ int s_end[kWarps];
  // Head weights (with the query scales): [query][head] (s_w), or with kTrim per lane: s_w4[query]
  // [t4][2 j + c] = weight of head 8 j + 2 t4 + c, rows padded to 20 floats (no bank conflicts
  // between the four t4 rows of an LDS.128 phase).
  constexpr int kW4Row = 20;
  __shared__ __align__(16) float s_w[kTrim ? 1 : kWarps][kTrim ? 1 : kMaxHeads];
  __shared__ __align__(16) float s_w4[kTrim ? kWarps : 1][4][kW4Row];
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
  for (int i = tid; i < kWarps * kMaxHeads; i += kNT) {
    const int qi = i / kMaxHeads, h = i % kMaxHeads;
    const int64_t t = t0 + qi;
    const float wv = (t < a.T && h < a.H) ? a.weights[t * a.H + h] * a.q_scale[t * a.H + h] * a.abs_scale : 0.f;
    if constexpr (kTrim) {
      s_w4[qi][(h >> 1) & 3][2 * (h >> 3) + (h & 1)] = kAbs ? 0.5f * wv : wv;
    } else {
      s_w[qi][h] = wv;
    }
  }
  for (int c = tid; c < kWarps * 64 * 8; c += kNT) {
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
    for (int c = tid; c < Plan::kTile * 8; c += kNT) {
      const int row = c >> 3, ch = c & 7;
      int64_t key = key0 + row;
      if (key >= a.L) key = a.L - 1;
      CpAsync16(dst + row * 128 + ((ch ^ (row & 7)) << 4), a.k + key * Plan::kD + ch * 16);
    }
  };
#pragma unroll
  for (int s = 0; s < Plan::kStages - 1; ++s) {
    if (s < num_tiles) load_tile(s);
    CpAsyncCommit();
  }

  // Low descriptor words (WgDesc) of the shared-memory base; + (byte offset >> 4) moves them
  // (addresses stay below 256 KiB, so the 14-bit field never carries).
  const uint32_t desc0 = ((sbase & 0x3FFFFu) >> 4) | (1u << 16);
  const uint32_t q_desc = desc0 + ((Plan::kQOff + kQPerWg * wg * Plan::kQBytes) >> 4);
  const int trigger = a.topk + (a.cap - Plan::kTile - a.topk) / 2;
  const int lane_key = wq * 16 + g + (t4 == 1 ? 8 : 0);
  // After a barrier that follows a tile's appends: the counts are read by all threads alike, so the
  // decision is uniform; compacts the buffers that could overflow on the next tile (threads 0..255,
  // named barrier 5, see TOPK_SELECT_SYNC; or both halves at once with kPairCompact).
  auto compact_if_full = [&]() {
      bool any_full = false;
  #pragma unroll
      for (int w = 0; w < kWarps; ++w) any_full |= s_cnt[w] + Plan::kTile > a.cap;
      if (any_full && kPairCompact) {
        // Half h (threads 256 h ..) compacts queries 4 h .. 4 h + 3 (keys-only scratch halves, named
        // barrier 6 + h); a query whose bins cannot get small enough is compacted exactly afterwards.
        const int half = tid >> 8, ltid = tid & 255;
        uint32_t* s_keyh = reinterpret_cast<uint32_t*>(smem + Plan::kScratchOff) + half * a.cap;
        bool need_exact = false;
        for (int w = 4 * half; w < 4 * half + 4; ++w) {
          const int n = s_cnt[w];
          int exact = 0;
          if (n > trigger) {
            const int64_t tw = t0 + w;
            float nt;
            const int kept = CompactKeysBinHalf(a.cand_scores + tw * a.cap, a.cand_idx + tw * a.cap, n, a.topk,
                                                a.topk + Plan::kTile, s_keyh, sel_half[half], 6 + half, ltid, &nt);
            if (kept < 0) {
              exact = 1;
            } else if (ltid == 0) {
              s_cnt[w] = kept;
              s_thr[w] = nt;
            }
          }
          if (ltid == 0) s_exact[w] = exact;
        }
        __syncthreads();
  #pragma unroll
        for (int w = 0; w < kWarps; ++w) need_exact |= s_exact[w] != 0;
        if (need_exact) {
          if (tid < kSelectThreads) {
            uint32_t* s_key = reinterpret_cast<uint32_t*>(smem + Plan::kScratchOff);
            int32_t* s_idx = reinterpret_cast<int32_t*>(s_key + a.cap);
            for (int w = 0; w < kWarps; ++w) {
              if (s_exact[w] != 0) {
                const int64_t tw = t0 + w;
                const float nt = CompactCandidates(a.cand_scores + tw * a.cap, a.cand_idx + tw * a.cap, s_cnt[w], a.topk,
                                                   s_key, s_idx, sel);
                if (tid == 0) {
                  s_cnt[w] = a.topk;
                  s_thr[w] = nt;
                }
              }
            }
          }
          __syncthreads();
        }
        if (tid < kWarps && s_cnt[tid] + Plan::kTile > a.cap) {
          CandidateOverflow("fp8 after compaction", t0 + tid, s_cnt[tid], a.cap);
        }
      } else if (any_full) {
        if (tid < kSelectThreads) {
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
        }
        __syncthreads();
        if (tid < kWarps && s_cnt[tid] + Plan::kTile > a.cap) {
          CandidateOverflow("fp8 after compaction", t0 + tid, s_cnt[tid], a.cap);
        }
      }
    if (s_overflow != 0) CandidateOverflow("fp8", t0, 0, a.cap);
  };
  float acc0[kAccN], acc1[kAccN];
  for (int tile = 0; tile < num_tiles; ++tile) {
    CpAsyncWait<Plan::kStages - 2>();
    FenceProxyAsync();
    __syncthreads();
    // kOneBar: the previous tile's compaction check runs after this barrier (one barrier per tile).
    if constexpr (kOneBar) {
      if (tile > 0) compact_if_full();
    }
    if (tile + Plan::kStages - 1 < num_tiles) load_tile(tile + Plan::kStages - 1);
    CpAsyncCommit();

    const int key0 = tile * Plan::kTile;
    const uint32_t key_desc = desc0 + (Plan::StageOff(tile) >> 4);
    float ks[kQuarters];
#pragma unroll
    for (int hf = 0; hf < kQuarters; ++hf) {
      ks[hf] = __ldg(a.k_scale + min(key0 + hf * 64 + lane_key, static_cast<int>(a.L) - 1));
    }
    // kTrim: this warpgroup's queries' key ends and thresholds for the tile (they change only at the
    // compactions between tiles).
    int end_r[kQPerWg];
    float thr_r[kQPerWg];
#pragma unroll
    for (int i = 0; i < kQPerWg; ++i) {
      if constexpr (kTrim) {
        end_r[i] = s_end[kQPerWg * wg + i];
        thr_r[i] = s_thr[kQPerWg * wg + i];
      } else {
        end_r[i] = 0;
        thr_r[i] = 0.f;
      }
    }
    auto issue = [&](float (&acc)[kAccN], int st) {
      const int quarter = st / kSPQ, qgroup = st % kSPQ;
      const uint32_t da = key_desc + ((quarter * 64 * 128) >> 4);
      const uint32_t db = q_desc + ((kQPerAcc * qgroup * Plan::kQBytes) >> 4);
      FenceRegs(acc);
      WgmmaFence();
#pragma unroll
      for (int k32 = 0; k32 < Plan::kD / 32; ++k32) {
        const uint64_t desc_a = (static_cast<uint64_t>(0x40000040u) << 32) | (da + 2 * k32);
        const uint64_t desc_b = (static_cast<uint64_t>(0x40000040u) << 32) | (db + 2 * k32);
        if constexpr (kQPerAcc == 2) {
          WgmmaM64N128K32E4M3(acc, desc_a, desc_b, k32 != 0);
        } else {
          WgmmaM64N64K32E4M3(acc, desc_a, desc_b, k32 != 0);
        }
      }
      WgmmaCommit();
      FenceRegs(acc);
    };
    // Step st's head sums before the quad reduction: sl[sub] / sh[sub] = this lane's partial sums for
    // keys g and g + 8 of query qbase + sub (reads the accumulator; no shuffle, no shared state).
    auto headsum = [&](float (&acc)[kAccN], int st, float (&sl)[kQPerAcc], float (&sh)[kQPerAcc]) {
      const int qgroup = st % kSPQ;
      const int qbase = kQPerWg * wg + kQPerAcc * qgroup;
#pragma unroll
      for (int sub = 0; sub < kQPerAcc; ++sub) {
        const int qw = qbase + sub;
        float lo[4] = {0.f, 0.f, 0.f, 0.f}, hi[4] = {0.f, 0.f, 0.f, 0.f};
        float4 w4[4];
        if constexpr (kTrim) {
#pragma unroll
          for (int m = 0; m < 4; ++m) w4[m] = *reinterpret_cast<const float4*>(&s_w4[qw][t4][4 * m]);
        }
#pragma unroll
        for (int j = 0; j < 8; ++j) {
          float2 wv;
          if constexpr (kTrim) {
            wv = (j & 1) ? make_float2(w4[j >> 1].z, w4[j >> 1].w) : make_float2(w4[j >> 1].x, w4[j >> 1].y);
          } else {
            wv = *reinterpret_cast<const float2*>(&s_w[qw][8 * j + 2 * t4]);
          }
          const int c = 2 * (j & 1);
          const float x0 = acc[32 * sub + 4 * j + 0], x1 = acc[32 * sub + 4 * j + 1];
          const float x2 = acc[32 * sub + 4 * j + 2], x3 = acc[32 * sub + 4 * j + 3];
          if constexpr (kAbs) {
            // w ReLU(x) = (w / 2) (x + |x|): two FFMAs (FMA pipe; |x| is an operand modifier) instead
            // of FMNMX (ALU pipe, half rate) + FFMA. s_w4 holds w / 2; lo[c] takes the x terms and
            // lo[c + 1] the |x| terms (other bits than the ReLU order: within the FP8 tolerance).
            lo[c] = fmaf(wv.x, x0, lo[c]);
            lo[c + 1] = fmaf(wv.x, fabsf(x0), lo[c + 1]);
            lo[c] = fmaf(wv.y, x1, lo[c]);
            lo[c + 1] = fmaf(wv.y, fabsf(x1), lo[c + 1]);
            hi[c] = fmaf(wv.x, x2, hi[c]);
            hi[c + 1] = fmaf(wv.x, fabsf(x2), hi[c + 1]);
            hi[c] = fmaf(wv.y, x3, hi[c]);
            hi[c + 1] = fmaf(wv.y, fabsf(x3), hi[c + 1]);
          } else {
            lo[c] = fmaf(wv.x, fmaxf(x0, 0.f), lo[c]);
            lo[c + 1] = fmaf(wv.y, fmaxf(x1, 0.f), lo[c + 1]);
            hi[c] = fmaf(wv.x, fmaxf(x2, 0.f), hi[c]);
            hi[c + 1] = fmaf(wv.y, fmaxf(x3, 0.f), hi[c + 1]);
          }
        }
        sl[sub] = (lo[0] + lo[1]) + (lo[2] + lo[3]);
        sh[sub] = (hi[0] + hi[1]) + (hi[2] + hi[3]);
      }
    };
    // The quad reduction, threshold and candidate appends of step st.
    auto select = [&](const float (&sl)[kQPerAcc], const float (&sh)[kQPerAcc], int st) {
      const int quarter = st / kSPQ, qgroup = st % kSPQ;
      const int qbase = kQPerWg * wg + kQPerAcc * qgroup;
      float sum[kQPerAcc];
      // Odd lanes keep the hi key and send lo, even lanes the reverse; after the xor-2 step lane
      // t4 == 0 holds key g's sum and t4 == 1 key g + 8's.
      const bool odd = (t4 & 1) != 0;
#pragma unroll
      for (int sub = 0; sub < kQPerAcc; ++sub) {
        sum[sub] = (odd ? sh[sub] : sl[sub]) + __shfl_xor_sync(0xffffffffu, odd ? sl[sub] : sh[sub], 1);
      }
#pragma unroll
      for (int sub = 0; sub < kQPerAcc; ++sub) sum[sub] += __shfl_xor_sync(0xffffffffu, sum[sub], 2);
#pragma unroll
      for (int sub = 0; sub < kQPerAcc; ++sub) {
        const int qw = qbase + sub;
        const int end = kTrim ? end_r[kQPerAcc * qgroup + sub] : s_end[qw];
        const float thr = kTrim ? thr_r[kQPerAcc * qgroup + sub] : s_thr[qw];
        const int key = key0 + quarter * 64 + lane_key;
        const float sc = sum[sub] * ks[quarter];
        const bool pass = t4 < 2 && key < end && sc > thr;
        const uint32_t ballot = __ballot_sync(0xffffffffu, pass);
        if (ballot) {
          int base = 0;
          if (lane == 0) base = atomicAdd(&s_cnt[qw], __popc(ballot));
          base = __shfl_sync(0xffffffffu, base, 0);
          if (pass) {
            const int pos = base + __popc(ballot & ((1u << lane) - 1u));
            if (pos < a.cap) {
              if constexpr (kTrim) {
                const int off = (static_cast<int>(t0) + qw) * a.cap + pos;  // < 2^31 (host check)
                a.cand_scores[off] = sc;
                a.cand_idx[off] = key;
              } else {
                const int64_t tq = t0 + qw;
                a.cand_scores[tq * a.cap + pos] = sc;
                a.cand_idx[tq * a.cap + pos] = key;
              }
            } else {
              s_overflow = 1;
            }
          }
        }
      }
    };
    auto epilogue = [&](float (&acc)[kAccN], int st) {
      float sl[kQPerAcc], sh[kQPerAcc];
      headsum(acc, st, sl, sh);
      select(sl, sh, st);
    };
    if constexpr (kAccs == 2) {
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
    } else if constexpr (kSplit) {
      // The next step's wgmma is issued as soon as the head sums have read the accumulator: the
      // shuffles, threshold and appends (shared-memory atomics, global stores) overlap it.
      issue(acc0, 0);
#pragma unroll
      for (int st = 0; st < kSteps; ++st) {
        WgmmaWait<0>();
        FenceRegs(acc0);
        float sl[kQPerAcc], sh[kQPerAcc];
        headsum(acc0, st, sl, sh);
        if (st + 1 < kSteps) issue(acc0, st + 1);
        select(sl, sh, st);
      }
    } else {
#pragma unroll
      for (int st = 0; st < kSteps; ++st) {
        issue(acc0, st);
        WgmmaWait<0>();
        FenceRegs(acc0);
        epilogue(acc0, st);
      }
    }

    if constexpr (!kOneBar) {
      __syncthreads();
      compact_if_full();
    }
  }
  CpAsyncWait<0>();
  __syncthreads();
  if constexpr (kOneBar) {
    if (s_overflow != 0) CandidateOverflow("fp8", t0, 0, a.cap);
  }
  if (a.final_compact) {
    if (tid < kSelectThreads) {
      uint32_t* s_key = reinterpret_cast<uint32_t*>(smem + Plan::kScratchOff);
      int32_t* s_idx = reinterpret_cast<int32_t*>(s_key + a.cap);
      for (int w = 0; w < kWarps; ++w) {
        const int n = s_cnt[w];
        if (n > a.topk + Plan::kTile) {
          const int64_t tw = t0 + w;
          float nt;
          const int kept = CompactCandidatesBin(a.cand_scores + tw * a.cap, a.cand_idx + tw * a.cap, n, a.topk,
                                                a.topk + Plan::kTile, s_key, s_idx, sel, &nt);
          if (tid == 0) s_cnt[w] = kept;
        }
      }
    }
    __syncthreads();
  }
  if (tid < kWarps && t0 + tid < a.T) a.cand_count[t0 + tid] = s_cnt[tid];
#else
  __trap();
#endif
}

}  // namespace
}  // namespace indexer_topk
}  // namespace indexcache
