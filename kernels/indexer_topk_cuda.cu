// Fused lightning-indexer scores + exact top-k on the GPU. The algorithm is described in
// kernels/indexer_topk_cuda.h; the comments here are about the mechanics.
#include "kernels/indexer_topk_cuda.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>

#include "core/cuda_check.h"
#include "kernels/ptx.cuh"

namespace indexcache {
namespace {

constexpr int kWarps = 8;                  // queries per CTA of the main kernel, one per warp
constexpr int kThreads = kWarps * 32;      // both kernels run 256 threads (the selects assume it)
#ifndef INDEXER_TOPK_TILE_KEYS  // tuning knobs for experiments; the defaults are the measured choice
#define INDEXER_TOPK_TILE_KEYS 128
#define INDEXER_TOPK_STAGES 3
#endif
#ifndef INDEXER_TOPK_CAP_FACTOR
#define INDEXER_TOPK_CAP_FACTOR 2
#endif
constexpr int kTileKeys = INDEXER_TOPK_TILE_KEYS;  // keys per pipeline stage
constexpr int kStages = INDEXER_TOPK_STAGES;       // cp.async pipeline depth
constexpr int kMaxTopk = 2048;
constexpr int kMaxHeads = 64;
// Split-keys path (decode).
constexpr int64_t kSplitMaxT = 64;         // auto: split keys only for T <= this
constexpr int64_t kSplitTargetCtas = 128;  // about one wave of the split kernel on an H100/H200 (132 SMs)
constexpr int64_t kSplitMinChunkTiles = 2; // at least 256 keys per chunk
constexpr int kMaxChunks = static_cast<int>(kSplitTargetCtas);
constexpr int kFineBins = 65536;           // histogram of OrderedKey >> 16
constexpr int kCoarseBins = 256;           // histogram of OrderedKey >> 24
constexpr int kMergeSmemEntries = 16384;   // survivors the merge kernel gathers into shared memory

int64_t CapacityFor(int64_t topk) {
  return std::max<int64_t>(INDEXER_TOPK_CAP_FACTOR * topk, 1024) + kTileKeys;
}

// ---------------------------------------------------------------------------------------------
// Small device helpers.

// A candidate buffer that would overflow is a bug in the compaction bookkeeping: stop the kernel
// with a message instead of writing past the buffer (the cost is one compare per survivor).
__device__ __noinline__ void CandidateOverflow(const char* where, int64_t t, int n, int cap) {
  printf("indexer top-k: candidate buffer overflow in %s: query %lld, count %d, capacity %d\n", where,
         static_cast<long long>(t), n, cap);
  __trap();
}

// Order-preserving map float -> uint32 (larger float, larger key); exact inverse below.
__device__ __forceinline__ uint32_t OrderedKey(float f) {
  const uint32_t u = __float_as_uint(f);
  return (u & 0x80000000u) ? ~u : (u | 0x80000000u);
}
__device__ __forceinline__ float KeyToFloat(uint32_t k) {
  return __uint_as_float((k & 0x80000000u) ? (k & 0x7fffffffu) : ~k);
}

// cp.async, ldmatrix, mma.sync and the wgmma wrappers: kernels/ptx.cuh.
using namespace ptx;

__device__ __forceinline__ int KeyEndOf(const int32_t* key_end, int64_t query_offset, int64_t L, int64_t t) {
  const int64_t end = key_end ? static_cast<int64_t>(key_end[t]) : query_offset + t + 1;
  return static_cast<int>(end < 0 ? 0 : (end > L ? L : end));
}

// ---------------------------------------------------------------------------------------------
// Block-wide radix select (256 threads).

struct SelectSmem {
  uint32_t hist[256];
  uint32_t warp_tot[kWarps];
  uint32_t red_min[kWarps], red_max[kWarps];
  uint32_t bcast[4];
  int counter;
};

struct SelectResult {
  uint32_t value;  // the rank-th largest key
  int keep_eq;     // how many elements equal to `value` are within the best `rank`
  int num_eq;      // how many elements equal `value`
};

// Among i in [0, n) with pred(i), the rank-th largest key(i) (1 <= rank <= that count). Every
// thread of the block must call it with the same arguments; it returns the same result to all.
template <class KeyFn, class PredFn>
__device__ SelectResult BlockRadixSelect(int n, int rank, KeyFn key, PredFn pred, SelectSmem& sm) {
  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  // Common prefix of all candidates: start the digits below it, so the first histogram spreads.
  uint32_t mn = 0xffffffffu, mx = 0u, cnt = 0u;
  for (int i = tid; i < n; i += kThreads) {
    if (pred(i)) {
      const uint32_t k = key(i);
      mn = min(mn, k);
      mx = max(mx, k);
      ++cnt;
    }
  }
  mn = __reduce_min_sync(0xffffffffu, mn);
  mx = __reduce_max_sync(0xffffffffu, mx);
  cnt = __reduce_add_sync(0xffffffffu, cnt);
  if (lane == 0) {
    sm.red_min[warp] = mn;
    sm.red_max[warp] = mx;
    sm.warp_tot[warp] = cnt;
  }
  __syncthreads();
  mn = 0xffffffffu;
  mx = 0u;
  cnt = 0u;
#pragma unroll
  for (int w = 0; w < kWarps; ++w) {
    mn = min(mn, sm.red_min[w]);
    mx = max(mx, sm.red_max[w]);
    cnt += sm.warp_tot[w];
  }
  __syncthreads();  // warp_tot is reused by the scans below

  int hi = (mn == mx) ? -1 : 31 - __clz(mn ^ mx);
  auto mask_above = [](int b) -> uint32_t { return b >= 31 ? 0u : ~((2u << b) - 1u); };
  uint32_t prefix = hi < 0 ? mx : (mx & mask_above(hi));  // all equal: the value is mx (no shift by -1)
  int rem = rank;
  int num_eq = static_cast<int>(cnt);
  while (hi >= 0) {
    const int sh = hi >= 7 ? hi - 7 : 0;
    const uint32_t dmask = (2u << (hi - sh)) - 1u;
    const uint32_t hmask = mask_above(hi);
    sm.hist[tid] = 0;
    __syncthreads();
    for (int i = tid; i < n; i += kThreads) {
      if (pred(i)) {
        const uint32_t k = key(i);
        if ((k & hmask) == prefix) atomicAdd(&sm.hist[(k >> sh) & dmask], 1u);
      }
    }
    __syncthreads();
    // Thread tid owns digit d = 255 - tid: an inclusive scan in thread order counts the elements
    // with digit >= d.
    const int d = 255 - tid;
    const uint32_t h = sm.hist[d];
    uint32_t incl = h;
#pragma unroll
    for (int o = 1; o < 32; o <<= 1) {
      const uint32_t v = __shfl_up_sync(0xffffffffu, incl, o);
      if (lane >= o) incl += v;
    }
    if (lane == 31) sm.warp_tot[warp] = incl;
    __syncthreads();
    for (int w = 0; w < warp; ++w) incl += sm.warp_tot[w];
    const uint32_t excl = incl - h;
    if (h > 0 && excl < static_cast<uint32_t>(rem) && static_cast<uint32_t>(rem) <= incl) {
      sm.bcast[0] = static_cast<uint32_t>(d);
      sm.bcast[1] = excl;
      sm.bcast[2] = h;
    }
    __syncthreads();
    prefix |= sm.bcast[0] << sh;
    rem -= static_cast<int>(sm.bcast[1]);
    num_eq = static_cast<int>(sm.bcast[2]);
    hi = sh - 1;
    __syncthreads();  // bcast / warp_tot / hist are rewritten by the next pass
  }
  return {prefix, rem, num_eq};
}

// Compacts the candidate buffer (gs, gi)[0, n) in place to exactly its r best entries
// (score desc, index asc; indices are distinct), r < n, in arbitrary order. s_key/s_idx: n entries
// of shared scratch. Returns the score of the r-th best. All 256 threads call it.
__device__ float CompactCandidates(float* gs, int32_t* gi, int n, int r, uint32_t* s_key, int32_t* s_idx,
                                   SelectSmem& sm) {
  const int tid = threadIdx.x, lane = tid & 31;
  for (int i = tid; i < n; i += kThreads) {
    s_key[i] = OrderedKey(gs[i]);
    s_idx[i] = gi[i];
  }
  __syncthreads();
  const SelectResult sel = BlockRadixSelect(
      n, r, [&](int i) { return s_key[i]; }, [](int) { return true; }, sm);
  const uint32_t v = sel.value;
  int idx_cut = 0x7fffffff;  // keep the elements equal to v with index <= idx_cut
  if (sel.keep_eq < sel.num_eq) {
    const SelectResult ties = BlockRadixSelect(
        n, sel.keep_eq, [&](int i) { return ~static_cast<uint32_t>(s_idx[i]); },
        [&](int i) { return s_key[i] == v; }, sm);
    idx_cut = static_cast<int>(~ties.value);
  }
  if (tid == 0) sm.counter = 0;
  __syncthreads();
  for (int base = 0; base < n; base += kThreads) {
    const int i = base + tid;
    bool keep = false;
    uint32_t k = 0;
    int32_t idx = 0;
    if (i < n) {
      k = s_key[i];
      idx = s_idx[i];
      keep = k > v || (k == v && idx <= idx_cut);
    }
    const uint32_t ballot = __ballot_sync(0xffffffffu, keep);
    int pos = 0;
    if (lane == 0 && ballot) pos = atomicAdd(&sm.counter, __popc(ballot));
    pos = __shfl_sync(0xffffffffu, pos, 0) + __popc(ballot & ((1u << lane) - 1u));
    if (keep) {
      gs[pos] = KeyToFloat(k);
      gi[pos] = idx;
    }
  }
  __syncthreads();
  return KeyToFloat(v);
}

// Main-kernel compaction: keeps every entry whose key is >= the lower edge of the radix bin that
// holds the r-th best key, stopping the select as soon as that keeps at most `limit` entries
// (usually after one or two 8-bit passes instead of four plus a tie pass). The kept set is a
// superset of the r best and *new_thr = the bin's lower edge <= the r-th best score, so every
// later key that is rejected (score <= *new_thr) has r kept entries at least as good and with
// lower indices: the finalize kernel's exact selection returns the same result as with an exact
// compaction. Falls back to CompactCandidates (exact) where the bins cannot get that small
// (heavy exact ties) or the edge is not a safe float. Returns the kept count. All threads call it.
__device__ int CompactCandidatesBin(float* gs, int32_t* gi, int n, int r, int limit, uint32_t* s_key,
                                    int32_t* s_idx, SelectSmem& sm, float* new_thr) {
  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  uint32_t mn = 0xffffffffu, mx = 0u;
  for (int i = tid; i < n; i += kThreads) {
    const uint32_t k = OrderedKey(gs[i]);
    s_key[i] = k;
    s_idx[i] = gi[i];
    mn = min(mn, k);
    mx = max(mx, k);
  }
  mn = __reduce_min_sync(0xffffffffu, mn);
  mx = __reduce_max_sync(0xffffffffu, mx);
  if (lane == 0) {
    sm.red_min[warp] = mn;
    sm.red_max[warp] = mx;
  }
  __syncthreads();
  mn = 0xffffffffu;
  mx = 0u;
#pragma unroll
  for (int w = 0; w < kWarps; ++w) {
    mn = min(mn, sm.red_min[w]);
    mx = max(mx, sm.red_max[w]);
  }
  int hi = (mn == mx) ? -1 : 31 - __clz(mn ^ mx);
  auto mask_above = [](int b) -> uint32_t { return b >= 31 ? 0u : ~((2u << b) - 1u); };
  uint32_t prefix = hi < 0 ? mx : (mx & mask_above(hi));
  int rem = r;
  int kept = n;
  bool done = false;
  uint32_t low = 0;
  while (hi >= 0) {
    const int sh = hi >= 7 ? hi - 7 : 0;
    const uint32_t dmask = (2u << (hi - sh)) - 1u;
    const uint32_t hmask = mask_above(hi);
    sm.hist[tid] = 0;
    __syncthreads();
    for (int i = tid; i < n; i += kThreads) {
      const uint32_t k = s_key[i];
      if ((k & hmask) == prefix) atomicAdd(&sm.hist[(k >> sh) & dmask], 1u);
    }
    __syncthreads();
    const int d = 255 - tid;
    const uint32_t h = sm.hist[d];
    uint32_t incl = h;
#pragma unroll
    for (int o = 1; o < 32; o <<= 1) {
      const uint32_t v = __shfl_up_sync(0xffffffffu, incl, o);
      if (lane >= o) incl += v;
    }
    if (lane == 31) sm.warp_tot[warp] = incl;
    __syncthreads();
    for (int w = 0; w < warp; ++w) incl += sm.warp_tot[w];
    const uint32_t excl = incl - h;
    if (h > 0 && excl < static_cast<uint32_t>(rem) && static_cast<uint32_t>(rem) <= incl) {
      sm.bcast[0] = static_cast<uint32_t>(d);
      sm.bcast[1] = excl;
      sm.bcast[2] = h;
    }
    __syncthreads();
    prefix |= sm.bcast[0] << sh;
    rem -= static_cast<int>(sm.bcast[1]);
    kept = (r - rem) + static_cast<int>(sm.bcast[2]);  // entries above the bin plus the bin
    hi = sh - 1;
    __syncthreads();  // bcast / warp_tot / hist are rewritten by the next pass
    if (kept <= limit) {
      low = prefix;  // bits below sh are zero: the bin's smallest key
      done = low >= 0x00800000u && low != 0x7fffffffu;
      break;
    }
  }
  if (!done) {
    *new_thr = CompactCandidates(gs, gi, n, r, s_key, s_idx, sm);
    return r;
  }
  if (tid == 0) sm.counter = 0;
  __syncthreads();
  for (int base = 0; base < n; base += kThreads) {
    const int i = base + tid;
    bool keep = false;
    uint32_t k = 0;
    int32_t idx = 0;
    if (i < n) {
      k = s_key[i];
      idx = s_idx[i];
      keep = k >= low;
    }
    const uint32_t ballot = __ballot_sync(0xffffffffu, keep);
    int pos = 0;
    if (lane == 0 && ballot) pos = atomicAdd(&sm.counter, __popc(ballot));
    pos = __shfl_sync(0xffffffffu, pos, 0) + __popc(ballot & ((1u << lane) - 1u));
    if (keep) {
      gs[pos] = KeyToFloat(k);
      gi[pos] = idx;
    }
  }
  __syncthreads();
  if (tid == 0 && sm.counter != kept) CandidateOverflow("compaction count", -1, sm.counter, kept);
  *new_thr = KeyToFloat(low);
  return kept;
}

// ---------------------------------------------------------------------------------------------
// Main kernel: scores + running selection.

struct MainArgs {
  const __nv_bfloat16* q;
  const __nv_bfloat16* k;
  const float* weights;
  const int32_t* key_end;
  int64_t T, L, H;
  int64_t query_offset;
  int topk;
  int cap;
  float abs_scale;
  bool negate_q;  // scale < 0: ReLU(scale * x) = |scale| * ReLU(-x)
  float* cand_scores;   // [T, cap]
  int32_t* cand_idx;    // [T, cap]
  int32_t* cand_count;  // [T]
};

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

// NT: n-tiles of 8 heads (H <= 8 * NT).
template <int D, int NT>
__global__ void __launch_bounds__(kThreads, 1) IndexerTopkMainKernel(const MainArgs a) {
  extern __shared__ __align__(16) uint8_t smem[];
  uint8_t* stages = smem;
  uint32_t* s_key = reinterpret_cast<uint32_t*>(smem + MainStageBytes<D>());
  int32_t* s_idx = reinterpret_cast<int32_t*>(s_key + a.cap);
  __shared__ SelectSmem sel;
  __shared__ int s_count[kWarps];
  __shared__ float s_thr[kWarps];
  __shared__ int s_end[kWarps];

  constexpr int KS = D / 16;  // k-steps
  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  const int g = lane >> 2, t4 = lane & 3;
  const int64_t t = static_cast<int64_t>(blockIdx.x) * kWarps + warp;
  const bool active = t < a.T;
  const int end = active ? KeyEndOf(a.key_end, a.query_offset, a.L, t) : 0;
  if (lane == 0) s_end[warp] = end;

  uint32_t bq[NT][KS][2];
  float wsc[NT][2];
  LoadQueryFragments<D, NT>(a.q, a.weights, t, a.H, active, a.negate_q, a.abs_scale, g, t4, bq, wsc);
  __syncthreads();
  int max_end = 0;
#pragma unroll
  for (int w = 0; w < kWarps; ++w) max_end = max(max_end, s_end[w]);
  const int num_tiles = (max_end + kTileKeys - 1) / kTileKeys;

  float* my_scores = a.cand_scores + (active ? t : 0) * a.cap;
  int32_t* my_idx = a.cand_idx + (active ? t : 0) * a.cap;
  float thr = -INFINITY;
  int count = 0;  // warp-uniform

  auto load_tile = [&](int tile) {
    uint8_t* dst = stages + (tile % kStages) * (kTileKeys * RowBytes<D>());
    constexpr int kChunksPerRow = D / 8;  // 16-byte chunks
    const int64_t key0 = static_cast<int64_t>(tile) * kTileKeys;
#pragma unroll
    for (int c = tid; c < kTileKeys * kChunksPerRow; c += kThreads) {
      const int row = c / kChunksPerRow, col = c % kChunksPerRow;
      int64_t key = key0 + row;
      if (key >= a.L) key = a.L - 1;  // rows past L are never valid: any finite data will do
      CpAsync16(dst + row * RowBytes<D>() + col * 16, a.k + key * D + col * 8);
    }
  };

#pragma unroll
  for (int s = 0; s < kStages - 1; ++s) {
    if (s < num_tiles) load_tile(s);
    CpAsyncCommit();
  }

  const uint32_t stage_base = static_cast<uint32_t>(__cvta_generic_to_shared(stages));
  // ldmatrix x4 address of this lane within an m-tile: row lane % 16, column half lane / 16.
  const uint32_t lane_off = (lane & 15) * RowBytes<D>() + (lane >> 4) * 16;

  for (int tile = 0; tile < num_tiles; ++tile) {
    CpAsyncWait<kStages - 2>();
    __syncthreads();
    if (tile + kStages - 1 < num_tiles) load_tile(tile + kStages - 1);
    CpAsyncCommit();

    const int key0 = tile * kTileKeys;
    if (key0 < end) {
      const uint32_t tile_addr = stage_base + (tile % kStages) * (kTileKeys * RowBytes<D>()) + lane_off;
#pragma unroll 1
      for (int mt = 0; mt < kTileKeys / 16; ++mt) {
        if (key0 + mt * 16 >= end) break;
        float acc[NT][4];
        MmaKeyTile<D, NT>(tile_addr + mt * 16 * RowBytes<D>(), bq, acc);
        float s_lo, s_hi;
        HeadSum<NT>(acc, wsc, &s_lo, &s_hi);
        // Lane t4 == 0 offers key g, lane t4 == 1 key g + 8.
        const int key = key0 + mt * 16 + g + (t4 == 1 ? 8 : 0);
        const float sc = t4 == 0 ? s_lo : s_hi;
        const bool pass = t4 < 2 && key < end && sc > thr;
        const uint32_t ballot = __ballot_sync(0xffffffffu, pass);
        if (ballot) {
          if (pass) {
            const int pos = count + __popc(ballot & ((1u << lane) - 1u));
            if (pos >= a.cap) CandidateOverflow("main", t, pos, a.cap);
            my_scores[pos] = sc;
            my_idx[pos] = key;
          }
          count += __popc(ballot);
        }
      }
    }

    // Room for another tile in every buffer? Otherwise compact the buffers that are more than
    // halfway from topk to full (amortises the CTA-wide pause over several queries).
    if (__syncthreads_or(lane == 0 && count + kTileKeys > a.cap)) {
      if (lane == 0) {
        s_count[warp] = count;
        s_thr[warp] = thr;
      }
      __syncthreads();
      const int trigger = a.topk + (a.cap - kTileKeys - a.topk) / 2;
      for (int w = 0; w < kWarps; ++w) {
        const int n = s_count[w];
        if (n > trigger) {
          const int64_t tw = static_cast<int64_t>(blockIdx.x) * kWarps + w;
          float nt;
          const int kept = CompactCandidatesBin(a.cand_scores + tw * a.cap, a.cand_idx + tw * a.cap, n, a.topk,
                                                a.topk + kTileKeys, s_key, s_idx, sel, &nt);
          if (tid == 0) {
            s_count[w] = kept;
            s_thr[w] = nt;
          }
        }
      }
      __syncthreads();
      count = s_count[warp];
      thr = s_thr[warp];
    }
  }
  CpAsyncWait<0>();
  if (active && lane == 0) a.cand_count[t] = count;
}

// ---------------------------------------------------------------------------------------------
// Main kernel, wgmma variant (D = 128, 33..64 heads). The same 8 queries per CTA and the same
// per-query candidate buffers, threshold and compaction as above, but the scores come from
// wgmma: the CTA's 8 queries sit in shared memory (B operand, [64 heads x 128], K-major, 128-byte
// swizzle), a key tile of 128 keys is the A operand ([64 keys x 128] per half). Warpgroup wg
// owns queries 4wg..4wg+3; for each query and key half it computes S[64 keys x 64 heads] with
// 8 x wgmma m64n64k16. The accumulator layout (row = key 16w + g (+8), column = head
// 8j + 2t4 + e) is the mma.sync one of the kernel above, and the ReLU / weight / head-sum code is
// the same, so the scores are the same bits. Candidates of a query come from all 4 warps of its
// warpgroup: positions are taken with a shared-memory counter (order does not matter: every
// selection downstream is by (score desc, index asc)).

#if !defined(__CUDA_ARCH__) || defined(__CUDA_ARCH_FEAT_SM90_ALL)
#define INDEXER_TOPK_HAS_WGMMA 1
#else
#define INDEXER_TOPK_HAS_WGMMA 0
#endif

constexpr int kWgD = 128;
constexpr int kWgTileKeys = 128;
constexpr int kWgQBytes = 64 * kWgD * 2;                  // 16384: one query, 2 blocks of 64 x 128 B
[[maybe_unused]] constexpr int kWgQBlock = 64 * 128;                       // 8192
constexpr int kWgStageBytes = kWgTileKeys * kWgD * 2;     // 32768: 2 blocks of 128 x 128 B
[[maybe_unused]] constexpr int kWgStageBlock = kWgTileKeys * 128;          // 16384
constexpr int kWgExtra = 1024;                            // scratch = free stage + 1 KiB
constexpr int kWgQOff = 0;
constexpr int kWgExtraAOff = kWgQOff + kWarps * kWgQBytes;  // 131072
constexpr int kWgStage0Off = kWgExtraAOff + kWgExtra;
constexpr int kWgStage1Off = kWgStage0Off + kWgStageBytes;
constexpr int kWgSmemUsed = kWgStage1Off + kWgStageBytes + kWgExtra;
constexpr int kWgSmemBytes = kWgSmemUsed + 1024;  // slack to align the base to 1024 B
constexpr int kWgScratchBytes = kWgStageBytes + kWgExtra;

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

// Barrier over the 128 threads of warpgroup wg only (ids 1 and 2; 0 is __syncthreads). Orders the
// warpgroup's shared-memory writes before its later reads, like __syncthreads for a quarter CTA.
__device__ __forceinline__ void WarpgroupBarrier(int wg) {
  asm volatile("bar.sync %0, 128;" ::"r"(1 + wg) : "memory");
}

__global__ void __launch_bounds__(kThreads, 1) IndexerTopkMainWgmmaKernel(const MainArgs a) {
#if INDEXER_TOPK_HAS_WGMMA
  extern __shared__ __align__(16) uint8_t smem_raw[];
  const uint32_t raw_addr = static_cast<uint32_t>(__cvta_generic_to_shared(smem_raw));
  const uint32_t pad = ((raw_addr + 1023u) & ~1023u) - raw_addr;
  uint8_t* smem = smem_raw + pad;
  const uint32_t sbase = raw_addr + pad;
  __shared__ SelectSmem sel;
  __shared__ int s_cnt[kWarps];
  __shared__ float s_thr[kWarps];
  __shared__ int s_end[kWarps];
  __shared__ float s_w[kWarps][kMaxHeads];

  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  const int g = lane >> 2, t4 = lane & 3;
  const int wg = warp >> 2, wq = warp & 3;
  const int64_t t0 = static_cast<int64_t>(blockIdx.x) * kWarps;

  if (tid < kWarps) {
    const int64_t t = t0 + tid;
    s_end[tid] = t < a.T ? KeyEndOf(a.key_end, a.query_offset, a.L, t) : 0;
    s_cnt[tid] = 0;
    s_thr[tid] = -INFINITY;
  }
  for (int i = tid; i < kWarps * kMaxHeads; i += kThreads) {
    const int qi = i / kMaxHeads, h = i % kMaxHeads;
    const int64_t t = t0 + qi;
    s_w[qi][h] = (t < a.T && h < a.H) ? a.weights[t * a.H + h] * a.abs_scale : 0.f;
  }
  // The 8 queries, swizzled; heads >= H and queries >= T are zero.
  for (int c = tid; c < kWarps * 64 * 16; c += kThreads) {
    const int qi = c >> 10, h = (c >> 4) & 63, ch = c & 15;
    const int64_t t = t0 + qi;
    uint4 v = make_uint4(0u, 0u, 0u, 0u);
    if (t < a.T && h < a.H) {
      v = __ldg(reinterpret_cast<const uint4*>(a.q + (t * a.H + h) * kWgD) + ch);
      if (a.negate_q) {
        v.x ^= 0x80008000u;
        v.y ^= 0x80008000u;
        v.z ^= 0x80008000u;
        v.w ^= 0x80008000u;
      }
    }
    *reinterpret_cast<uint4*>(smem + kWgQOff + (ch >> 3) * (kWarps * kWgQBlock) + qi * kWgQBlock + h * 128 +
                              (((ch & 7) ^ (h & 7)) << 4)) = v;
  }
  __syncthreads();
  int max_end = 0;
#pragma unroll
  for (int w = 0; w < kWarps; ++w) max_end = max(max_end, s_end[w]);
  const int num_tiles = (max_end + kWgTileKeys - 1) / kWgTileKeys;

  auto stage_off = [](int tile) { return (tile & 1) ? kWgStage1Off : kWgStage0Off; };
  auto load_tile = [&](int tile) {
    uint8_t* dst = smem + stage_off(tile);
    const int64_t key0 = static_cast<int64_t>(tile) * kWgTileKeys;
#pragma unroll
    for (int c = tid; c < kWgTileKeys * 16; c += kThreads) {
      const int row = c >> 4, ch = c & 15;
      int64_t key = key0 + row;
      if (key >= a.L) key = a.L - 1;  // rows past L are never valid: any finite data will do
      CpAsync16(dst + (ch >> 3) * kWgStageBlock + row * 128 + (((ch & 7) ^ (row & 7)) << 4),
                a.k + key * kWgD + ch * 8);
    }
  };

  if (num_tiles > 0) load_tile(0);
  CpAsyncCommit();

  const int trigger = a.topk + (a.cap - kWgTileKeys - a.topk) / 2;
  float acc0[64], acc1[64];
  for (int tile = 0; tile < num_tiles; ++tile) {
    CpAsyncWait<0>();
    FenceProxyAsync();
    __syncthreads();
    if (tile + 1 < num_tiles) load_tile(tile + 1);
    CpAsyncCommit();

    const int key0 = tile * kWgTileKeys;
    const uint32_t key_stage = sbase + stage_off(tile);
    const uint32_t q_wg = sbase + kWgQOff + (4 * wg) * kWgQBlock;
    // Steps st = 2 p + hf: queries 4wg + 2p and 4wg + 2p + 1 (N = 128), keys [64 hf, 64 hf + 64)
    // of the tile; two steps in flight.
    auto issue = [&](float (&acc)[64], int st) {
      WgIssue2(acc, key_stage + (st & 1) * (64 * 128), q_wg + (st >> 1) * 2 * kWgQBlock, kWarps * kWgQBlock);
    };
    auto epilogue = [&](float (&acc)[64], int st) {
#pragma unroll
      for (int sub = 0; sub < 2; ++sub) {
        const int qw = 4 * wg + 2 * (st >> 1) + sub;
        const int end = s_end[qw];
        const float thr = s_thr[qw];
        float s_lo = 0.f, s_hi = 0.f;
#pragma unroll
        for (int j = 0; j < 8; ++j) {
          const float w0 = s_w[qw][8 * j + 2 * t4], w1 = s_w[qw][8 * j + 2 * t4 + 1];
          s_lo = fmaf(w0, fmaxf(acc[32 * sub + 4 * j + 0], 0.f), s_lo);
          s_lo = fmaf(w1, fmaxf(acc[32 * sub + 4 * j + 1], 0.f), s_lo);
          s_hi = fmaf(w0, fmaxf(acc[32 * sub + 4 * j + 2], 0.f), s_hi);
          s_hi = fmaf(w1, fmaxf(acc[32 * sub + 4 * j + 3], 0.f), s_hi);
        }
        s_lo += __shfl_xor_sync(0xffffffffu, s_lo, 1);
        s_hi += __shfl_xor_sync(0xffffffffu, s_hi, 1);
        s_lo += __shfl_xor_sync(0xffffffffu, s_lo, 2);
        s_hi += __shfl_xor_sync(0xffffffffu, s_hi, 2);
        const int key = key0 + (st & 1) * 64 + wq * 16 + g + (t4 == 1 ? 8 : 0);
        const float sc = t4 == 0 ? s_lo : s_hi;
        const bool pass = t4 < 2 && key < end && sc > thr;
        const uint32_t ballot = __ballot_sync(0xffffffffu, pass);
        if (ballot) {
          int base = 0;
          if (lane == 0) base = atomicAdd(&s_cnt[qw], __popc(ballot));
          base = __shfl_sync(0xffffffffu, base, 0);
          if (pass) {
            const int64_t tq = t0 + qw;  // pass implies key < end, so tq < T
            const int pos = base + __popc(ballot & ((1u << lane) - 1u));
            if (pos >= a.cap) CandidateOverflow("main-wgmma", tq, pos, a.cap);
            a.cand_scores[tq * a.cap + pos] = sc;
            a.cand_idx[tq * a.cap + pos] = key;
          }
        }
      }
    };
    issue(acc0, 0);
    issue(acc1, 1);
    WgmmaWait<1>();
    FenceRegs(acc0);
    epilogue(acc0, 0);
    issue(acc0, 2);
    WgmmaWait<1>();
    FenceRegs(acc1);
    epilogue(acc1, 1);
    issue(acc1, 3);
    WgmmaWait<1>();
    FenceRegs(acc0);
    epilogue(acc0, 2);
    WgmmaWait<0>();
    FenceRegs(acc1);
    epilogue(acc1, 3);

    // Every wgmma of this tile is done (both warpgroups waited) after this barrier, so its stage
    // is free: the compaction scratch is that stage plus the 1 KiB next to it.
    // A query's count is raised by the four warps of its warpgroup, so each warpgroup first waits for
    // its own four warps (a named barrier) and then judges only its own queries. (Judging all eight
    // counts in the predicate of __syncthreads_or read the other warpgroup's counts before that
    // warpgroup had finished its epilogue: a buffer that needed compacting went unnoticed and
    // overflowed on the next tile. A full extra __syncthreads here cost 7-18 % of the kernel.)
    WarpgroupBarrier(wg);
    const bool my_query_full = wq == 0 && lane < 4 && s_cnt[4 * wg + lane] + kWgTileKeys > a.cap;
    if (__syncthreads_or(my_query_full)) {
      uint8_t* scratch = smem + ((tile & 1) ? kWgStage1Off : kWgExtraAOff);
      uint32_t* s_key = reinterpret_cast<uint32_t*>(scratch);
      int32_t* s_idx = reinterpret_cast<int32_t*>(s_key + a.cap);
      for (int w = 0; w < kWarps; ++w) {
        const int n = s_cnt[w];
        if (n > trigger) {
          const int64_t tw = t0 + w;
          float nt;
          const int kept = CompactCandidatesBin(a.cand_scores + tw * a.cap, a.cand_idx + tw * a.cap, n, a.topk,
                                                a.topk + kWgTileKeys, s_key, s_idx, sel, &nt);
          if (tid == 0) {
            s_cnt[w] = kept;
            s_thr[w] = nt;
          }
        }
      }
      __syncthreads();
      if (tid < kWarps && s_cnt[tid] + kWgTileKeys > a.cap) {
        CandidateOverflow("main-wgmma after compaction", t0 + tid, s_cnt[tid], a.cap);
      }
    }
  }
  CpAsyncWait<0>();
  __syncthreads();
  if (tid < kWarps && t0 + tid < a.T) a.cand_count[t0 + tid] = s_cnt[tid];
#else
  __trap();
#endif
}

// ---------------------------------------------------------------------------------------------
// Finalize kernel: exact top-k of each buffer, sorted best first.

struct FinalArgs {
  float* cand_scores;
  int32_t* cand_idx;
  const int32_t* cand_count;
  int topk;
  int cap;
  int sort_len;  // power of two >= topk
  int32_t* out_indices;
  float* out_scores;
};

// s_sort[0, len) (len a power of two, filled and synchronised): r packed entries
// (OrderedKey(score) << 32) | ~index, then zeros. Sorts them descending (score desc, index asc) and
// writes row `out_i` / `out_s` (may be null) of topk entries, padding past r. All threads call it.
__device__ void SortPackedAndWrite(unsigned long long* s_sort, int len, int r, int topk, int32_t* out_i,
                                   float* out_s) {
  const int tid = threadIdx.x;
  for (int size = 2; size <= len; size <<= 1) {
    for (int stride = size >> 1; stride > 0; stride >>= 1) {
      for (int i = tid; i < len / 2; i += kThreads) {
        const int lo = 2 * i - (i & (stride - 1));
        const int hi = lo + stride;
        const bool desc = (lo & size) == 0;
        const unsigned long long x = s_sort[lo], y = s_sort[hi];
        if ((x < y) == desc) {
          s_sort[lo] = y;
          s_sort[hi] = x;
        }
      }
      __syncthreads();
    }
  }
  for (int j = tid; j < topk; j += kThreads) {
    if (j < r) {
      const unsigned long long e = s_sort[j];
      out_i[j] = static_cast<int32_t>(~static_cast<uint32_t>(e & 0xffffffffull));
      if (out_s) out_s[j] = KeyToFloat(static_cast<uint32_t>(e >> 32));
    } else {
      out_i[j] = -1;
      if (out_s) out_s[j] = -INFINITY;
    }
  }
}

__global__ void __launch_bounds__(kThreads) IndexerTopkFinalizeKernel(const FinalArgs a) {
  extern __shared__ __align__(16) uint8_t smem[];
  unsigned long long* s_sort = reinterpret_cast<unsigned long long*>(smem);
  uint32_t* s_key = reinterpret_cast<uint32_t*>(s_sort + a.sort_len);
  int32_t* s_idx = reinterpret_cast<int32_t*>(s_key + a.cap);
  __shared__ SelectSmem sel;

  const int tid = threadIdx.x;
  const int64_t t = blockIdx.x;
  float* gs = a.cand_scores + t * a.cap;
  int32_t* gi = a.cand_idx + t * a.cap;
  const int n = a.cand_count[t];
  if (n < 0 || n > a.cap) CandidateOverflow("finalize", t, n, a.cap);
  const int r = min(a.topk, n);
  if (n > r) CompactCandidates(gs, gi, n, r, s_key, s_idx, sel);

  int len = 1;
  while (len < r) len <<= 1;
  // (score key << 32) | ~index: descending order = score desc, then index asc. Padding 0 sorts last.
  for (int i = tid; i < len; i += kThreads) {
    s_sort[i] = i < r ? (static_cast<unsigned long long>(OrderedKey(gs[i])) << 32) | (~static_cast<uint32_t>(gi[i]))
                      : 0ull;
  }
  __syncthreads();
  SortPackedAndWrite(s_sort, len, r, a.topk, a.out_indices + t * a.topk,
                     a.out_scores ? a.out_scores + t * a.topk : nullptr);
}

// ---------------------------------------------------------------------------------------------
// Split-keys path (few queries): split kernel, filter kernel, merge kernel.

struct SplitArgs {
  const __nv_bfloat16* q;
  const __nv_bfloat16* k;
  const float* weights;
  const int32_t* key_end;
  int64_t T, L, H;
  int64_t query_offset;
  int topk;
  int nchunks;      // chunks per query
  int chunk_tiles;  // tiles of kTileKeys keys per chunk
  int seg_cap;      // buffer entries per (query, chunk)
  float abs_scale;
  bool negate_q;
  float* cand_scores;    // [T, nchunks, seg_cap]
  int32_t* cand_idx;     // [T, nchunks, seg_cap]
  int32_t* cand_count;   // [T, nchunks]
  uint32_t* hist;        // [T, kCoarseBins + kFineBins], zeroed before the split kernel
  int32_t* out_indices;  // merge kernel
  float* out_scores;
};

// Block-wide (256 threads) inclusive scan of h in thread order; *total gets the sum over the block.
__device__ __forceinline__ uint32_t BlockInclusiveScan(uint32_t h, uint32_t* warp_tot, uint32_t* total) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  uint32_t incl = h;
#pragma unroll
  for (int o = 1; o < 32; o <<= 1) {
    const uint32_t v = __shfl_up_sync(0xffffffffu, incl, o);
    if (lane >= o) incl += v;
  }
  if (lane == 31) warp_tot[warp] = incl;
  __syncthreads();
  uint32_t before = 0, tot = 0;
#pragma unroll
  for (int w = 0; w < kWarps; ++w) {
    if (w < warp) before += warp_tot[w];
    tot += warp_tot[w];
  }
  __syncthreads();  // warp_tot is reused
  *total = tot;
  return incl + before;
}

// The number of buffered entries of query row `hist` (coarse bins first, then fine bins).
__device__ uint32_t HistTotal(const uint32_t* hist, SelectSmem& sm) {
  uint32_t tot;
  BlockInclusiveScan(hist[threadIdx.x], sm.warp_tot, &tot);
  return tot;
}

// The fine bin (OrderedKey >> 16) holding the r-th largest buffered key, 1 <= r <= total.
__device__ uint32_t ThresholdBin(const uint32_t* hist, uint32_t r, SelectSmem& sm) {
  const int tid = threadIdx.x;
  const int d = 255 - tid;  // thread tid owns digit 255 - tid: the inclusive scan counts digits >= d
  uint32_t tot;
  uint32_t h = hist[d];
  uint32_t incl = BlockInclusiveScan(h, sm.warp_tot, &tot);
  if (h > 0 && incl - h < r && r <= incl) {
    sm.bcast[0] = static_cast<uint32_t>(d);
    sm.bcast[1] = incl - h;
  }
  __syncthreads();
  const uint32_t cb = sm.bcast[0];
  const uint32_t rem = r - sm.bcast[1];
  __syncthreads();
  h = hist[kCoarseBins + ((cb << 8) | static_cast<uint32_t>(d))];
  incl = BlockInclusiveScan(h, sm.warp_tot, &tot);
  if (h > 0 && incl - h < rem && rem <= incl) sm.bcast[0] = (cb << 8) | static_cast<uint32_t>(d);
  __syncthreads();
  const uint32_t bin = sm.bcast[0];
  __syncthreads();
  return bin;
}

// One CTA per (query blockIdx.x, chunk blockIdx.y).
template <int D, int NT>
__global__ void __launch_bounds__(kThreads, 1) IndexerTopkSplitKernel(const SplitArgs a) {
  // D = 128 with 33..64 heads: the scores come from wgmma (as in IndexerTopkMainWgmmaKernel, the
  // same bits): q in shared memory, swizzled key stages; otherwise mma.sync from registers.
  constexpr bool kWg = D == kWgD && NT == 8;
  extern __shared__ __align__(16) uint8_t smem_raw[];
  uint8_t* smem = smem_raw;
  if constexpr (kWg) {
    const uint32_t raw_addr = static_cast<uint32_t>(__cvta_generic_to_shared(smem_raw));
    smem = smem_raw + (((raw_addr + 1023u) & ~1023u) - raw_addr);
  }
  uint8_t* stages = smem + (kWg ? kWgQBytes : 0);
  uint32_t* s_key =
      reinterpret_cast<uint32_t*>(stages + (kWg ? kStages * kWgStageBytes : MainStageBytes<D>()));
  int32_t* s_idx = reinterpret_cast<int32_t*>(s_key + a.seg_cap);
  __shared__ SelectSmem sel;
  __shared__ int s_count;
  __shared__ uint32_t s_coarse[kCoarseBins];

  constexpr int KS = D / 16;
  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  const int g = lane >> 2, t4 = lane & 3;
  const int64_t t = blockIdx.x;
  const int chunk = blockIdx.y;
  const int64_t slot = t * a.nchunks + chunk;
  const int end = KeyEndOf(a.key_end, a.query_offset, a.L, t);
  const int tile_begin = chunk * a.chunk_tiles;
  const int tile_end = min(tile_begin + a.chunk_tiles, (end + kTileKeys - 1) / kTileKeys);
  if (tile_begin >= tile_end) {
    if (tid == 0) a.cand_count[slot] = 0;
    return;
  }
  const int num_tiles = tile_end - tile_begin;
  float* my_scores = a.cand_scores + slot * a.seg_cap;
  int32_t* my_idx = a.cand_idx + slot * a.seg_cap;

  auto load_tile = [&](int i) {  // i: tile number within the chunk
    if constexpr (kWg) {
      uint8_t* dst = stages + (i % kStages) * kWgStageBytes;
      const int64_t key0 = static_cast<int64_t>(tile_begin + i) * kTileKeys;
#pragma unroll
      for (int c = tid; c < kTileKeys * 16; c += kThreads) {
        const int row = c >> 4, ch = c & 15;
        int64_t key = key0 + row;
        if (key >= a.L) key = a.L - 1;
        CpAsync16(dst + (ch >> 3) * kWgStageBlock + row * 128 + (((ch & 7) ^ (row & 7)) << 4),
                  a.k + key * D + ch * 8);
      }
      return;
    }
    uint8_t* dst = stages + (i % kStages) * (kTileKeys * RowBytes<D>());
    constexpr int kChunksPerRow = D / 8;
    const int64_t key0 = static_cast<int64_t>(tile_begin + i) * kTileKeys;
#pragma unroll
    for (int c = tid; c < kTileKeys * kChunksPerRow; c += kThreads) {
      const int row = c / kChunksPerRow, col = c % kChunksPerRow;
      int64_t key = key0 + row;
      if (key >= a.L) key = a.L - 1;  // rows past L are never valid: any finite data will do
      CpAsync16(dst + row * RowBytes<D>() + col * 16, a.k + key * D + col * 8);
    }
  };
#pragma unroll
  for (int s = 0; s < kStages - 1; ++s) {
    if (s < num_tiles) load_tile(s);
    CpAsyncCommit();
  }

  // q[t] as B fragments (as in the main kernel; every warp holds the same query).
  uint32_t bq[NT][KS][2];
  float wsc[NT][2];
  LoadQueryFragments<D, NT>(a.q, a.weights, t, a.H, true, a.negate_q, a.abs_scale, g, t4, bq, wsc);
  if constexpr (kWg) {  // q[t] into shared memory, swizzled (heads >= H zero)
    for (int c = tid; c < 64 * 16; c += kThreads) {
      const int h = c >> 4, ch = c & 15;
      uint4 v = make_uint4(0u, 0u, 0u, 0u);
      if (h < a.H) {
        v = __ldg(reinterpret_cast<const uint4*>(a.q + (t * a.H + h) * D) + ch);
        if (a.negate_q) {
          v.x ^= 0x80008000u;
          v.y ^= 0x80008000u;
          v.z ^= 0x80008000u;
          v.w ^= 0x80008000u;
        }
      }
      *reinterpret_cast<uint4*>(smem + (ch >> 3) * kWgQBlock + h * 128 + (((ch & 7) ^ (h & 7)) << 4)) = v;
    }
  }
  if (tid == 0) s_count = 0;
  s_coarse[tid] = 0;  // kThreads == kCoarseBins

  const uint32_t stage_base = static_cast<uint32_t>(__cvta_generic_to_shared(stages));
  const uint32_t lane_off = (lane & 15) * RowBytes<D>() + (lane >> 4) * 16;
  float thr = -INFINITY;  // block-uniform

  for (int i = 0; i < num_tiles; ++i) {
    CpAsyncWait<kStages - 2>();
#if INDEXER_TOPK_HAS_WGMMA
    if constexpr (kWg) FenceProxyAsync();  // this thread's q / key copies, visible to wgmma
#endif
    __syncthreads();
    if (i + kStages - 1 < num_tiles) load_tile(i + kStages - 1);
    CpAsyncCommit();

    const int key0 = (tile_begin + i) * kTileKeys;
    const uint32_t tile_addr = stage_base + (i % kStages) * (kTileKeys * RowBytes<D>()) + lane_off;
#pragma unroll 1
    for (int mt = warp; mt < kTileKeys / 16; mt += kWarps) {
      float acc[NT][4];
      if constexpr (kWg) {  // kTileKeys / 16 == kWarps: one pass, mt == warp, whole warpgroups
#if INDEXER_TOPK_HAS_WGMMA
        const int wg = warp >> 2;
        float accw[32];
        if (key0 + 64 * wg < end) {  // warpgroup-uniform
          const uint32_t smem_addr = static_cast<uint32_t>(__cvta_generic_to_shared(smem));
          WgIssue(accw, smem_addr + kWgQBytes + (i % kStages) * kWgStageBytes + wg * 64 * 128, smem_addr);
          WgmmaWait<0>();
          FenceRegs(accw);
        }
        if (key0 + mt * 16 >= end) break;
#pragma unroll
        for (int j = 0; j < NT; ++j) {
#pragma unroll
          for (int e = 0; e < 4; ++e) acc[j][e] = accw[4 * j + e];
        }
#else
        __trap();
#endif
      } else {
        if (key0 + mt * 16 >= end) break;
        MmaKeyTile<D, NT>(tile_addr + mt * 16 * RowBytes<D>(), bq, acc);
      }
      float s_lo, s_hi;
      HeadSum<NT>(acc, wsc, &s_lo, &s_hi);
      const int key = key0 + mt * 16 + g + (t4 == 1 ? 8 : 0);
      const float sc = t4 == 0 ? s_lo : s_hi;
      const bool pass = t4 < 2 && key < end && sc > thr;
      const uint32_t ballot = __ballot_sync(0xffffffffu, pass);
      if (ballot) {
        int base = 0;
        if (lane == 0) base = atomicAdd(&s_count, __popc(ballot));
        base = __shfl_sync(0xffffffffu, base, 0);
        if (pass) {
          const int pos = base + __popc(ballot & ((1u << lane) - 1u));
          my_scores[pos] = sc;
          my_idx[pos] = key;
        }
      }
    }
    __syncthreads();
    const int n = s_count;
    // Another tile could overflow the buffer: compact it to its exact topk best. (When seg_cap is
    // the chunk's whole key count it never overflows, and n > topk keeps CompactCandidates' r < n.)
    if (i + 1 < num_tiles && n + kTileKeys > a.seg_cap && n > a.topk) {
      thr = CompactCandidates(my_scores, my_idx, n, a.topk, s_key, s_idx, sel);
      if (tid == 0) s_count = a.topk;
    }
  }
  CpAsyncWait<0>();
  __syncthreads();
  const int n = s_count;
  // Histograms of the buffered entries (the CTA's own global writes are visible after the barrier).
  uint32_t* hist = a.hist + t * (kCoarseBins + kFineBins);
  for (int j = tid; j < n; j += kThreads) {
    const uint32_t bin = OrderedKey(my_scores[j]) >> 16;
    atomicAdd(&hist[kCoarseBins + bin], 1u);
    atomicAdd(&s_coarse[bin >> 8], 1u);
  }
  __syncthreads();
  if (s_coarse[tid]) atomicAdd(&hist[tid], s_coarse[tid]);
  if (tid == 0) a.cand_count[slot] = n;
}

// One CTA per (query blockIdx.x, chunk blockIdx.y): drops the entries below the threshold bin.
__global__ void __launch_bounds__(kThreads) IndexerTopkSplitFilterKernel(const SplitArgs a) {
  extern __shared__ __align__(16) uint8_t smem[];
  uint32_t* s_key = reinterpret_cast<uint32_t*>(smem);
  int32_t* s_idx = reinterpret_cast<int32_t*>(s_key + a.seg_cap);
  __shared__ SelectSmem sel;
  const int tid = threadIdx.x, lane = tid & 31;
  const int64_t t = blockIdx.x;
  const int64_t slot = t * a.nchunks + blockIdx.y;
  const int n = a.cand_count[slot];
  if (n == 0) return;
  const uint32_t* hist = a.hist + t * (kCoarseBins + kFineBins);
  const uint32_t total = HistTotal(hist, sel);
  const uint32_t r = min(static_cast<uint32_t>(a.topk), total);  // >= 1: this chunk has entries
  const uint32_t bin = ThresholdBin(hist, r, sel);
  float* gs = a.cand_scores + slot * a.seg_cap;
  int32_t* gi = a.cand_idx + slot * a.seg_cap;
  for (int j = tid; j < n; j += kThreads) {
    s_key[j] = OrderedKey(gs[j]);
    s_idx[j] = gi[j];
  }
  if (tid == 0) sel.counter = 0;
  __syncthreads();
  for (int base = 0; base < n; base += kThreads) {
    const int j = base + tid;
    const bool keep = j < n && (s_key[j] >> 16) >= bin;
    const uint32_t ballot = __ballot_sync(0xffffffffu, keep);
    int pos = 0;
    if (lane == 0 && ballot) pos = atomicAdd(&sel.counter, __popc(ballot));
    pos = __shfl_sync(0xffffffffu, pos, 0) + __popc(ballot & ((1u << lane) - 1u));
    if (keep) {
      gs[pos] = KeyToFloat(s_key[j]);
      gi[pos] = s_idx[j];
    }
  }
  __syncthreads();
  if (tid == 0) a.cand_count[slot] = sel.counter;
}

// Among i in [0, n) with pred(i), the r best by (key desc, index asc) (indices distinct, r <= that
// count), packed into s_sort[0, r) in arbitrary order. All threads call it.
template <class KeyFn, class IdxFn, class PredFn>
__device__ void SelectIntoSort(int n, int r, KeyFn key, IdxFn idx, PredFn pred, unsigned long long* s_sort,
                               SelectSmem& sm) {
  const int lane = threadIdx.x & 31;
  const SelectResult s = BlockRadixSelect(n, r, key, pred, sm);
  const uint32_t v = s.value;
  int idx_cut = 0x7fffffff;
  if (s.keep_eq < s.num_eq) {
    const SelectResult ties = BlockRadixSelect(
        n, s.keep_eq, [&](int i) { return ~static_cast<uint32_t>(idx(i)); },
        [&](int i) { return pred(i) && key(i) == v; }, sm);
    idx_cut = static_cast<int>(~ties.value);
  }
  if (threadIdx.x == 0) sm.counter = 0;
  __syncthreads();
  for (int base = 0; base < n; base += kThreads) {
    const int i = base + threadIdx.x;
    bool keep = false;
    uint32_t k = 0;
    int32_t ix = 0;
    if (i < n && pred(i)) {
      k = key(i);
      ix = idx(i);
      keep = k > v || (k == v && ix <= idx_cut);
    }
    const uint32_t ballot = __ballot_sync(0xffffffffu, keep);
    int pos = 0;
    if (lane == 0 && ballot) pos = atomicAdd(&sm.counter, __popc(ballot));
    pos = __shfl_sync(0xffffffffu, pos, 0) + __popc(ballot & ((1u << lane) - 1u));
    if (keep) s_sort[pos] = (static_cast<unsigned long long>(k) << 32) | (~static_cast<uint32_t>(ix));
  }
  __syncthreads();
}

// One CTA per query: exact top-r of the surviving entries of all chunks, sorted, written.
__global__ void __launch_bounds__(kThreads) IndexerTopkSplitMergeKernel(const SplitArgs a, int sort_len) {
  extern __shared__ __align__(16) uint8_t smem[];
  unsigned long long* s_sort = reinterpret_cast<unsigned long long*>(smem);
  uint32_t* s_key = reinterpret_cast<uint32_t*>(s_sort + sort_len);
  int32_t* s_idx = reinterpret_cast<int32_t*>(s_key + kMergeSmemEntries);
  __shared__ SelectSmem sel;
  __shared__ int s_cnt[kMaxChunks];
  __shared__ int s_fill;
  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  const int64_t t = blockIdx.x;
  const uint32_t* hist = a.hist + t * (kCoarseBins + kFineBins);
  const int r = static_cast<int>(min(static_cast<uint32_t>(a.topk), HistTotal(hist, sel)));
  const float* gs = a.cand_scores + t * a.nchunks * a.seg_cap;
  const int32_t* gi = a.cand_idx + t * a.nchunks * a.seg_cap;
  int32_t* out_i = a.out_indices + t * a.topk;
  float* out_s = a.out_scores ? a.out_scores + t * a.topk : nullptr;
  int len = 1;
  while (len < r) len <<= 1;
  if (r > 0) {
    int mine = 0;
    for (int c = tid; c < a.nchunks; c += kThreads) {
      s_cnt[c] = a.cand_count[t * a.nchunks + c];
      mine += s_cnt[c];
    }
    if (tid == 0) s_fill = 0;
    uint32_t survivors;
    BlockInclusiveScan(static_cast<uint32_t>(mine), sel.warp_tot, &survivors);  // syncs s_cnt, s_fill
    if (survivors <= static_cast<uint32_t>(kMergeSmemEntries)) {
      for (int c = warp; c < a.nchunks; c += kWarps) {
        const int n = s_cnt[c];
        if (n == 0) continue;
        int base = 0;
        if (lane == 0) base = atomicAdd(&s_fill, n);
        base = __shfl_sync(0xffffffffu, base, 0);
        const float* cs = gs + static_cast<int64_t>(c) * a.seg_cap;
        const int32_t* ci = gi + static_cast<int64_t>(c) * a.seg_cap;
        for (int j = lane; j < n; j += 32) {
          s_key[base + j] = OrderedKey(cs[j]);
          s_idx[base + j] = ci[j];
        }
      }
      __syncthreads();
      SelectIntoSort(
          static_cast<int>(survivors), r, [&](int i) { return s_key[i]; }, [&](int i) { return s_idx[i]; },
          [](int) { return true; }, s_sort, sel);
    } else {
      // Too many survivors (heavy exact ties): select straight from the workspace.
      const int seg_cap = a.seg_cap;
      SelectIntoSort(
          a.nchunks * seg_cap, r, [&](int i) { return OrderedKey(gs[i]); }, [&](int i) { return gi[i]; },
          [&](int i) { return (i % seg_cap) < s_cnt[i / seg_cap]; }, s_sort, sel);
    }
  }
  for (int i = r + tid; i < len; i += kThreads) s_sort[i] = 0ull;
  __syncthreads();
  SortPackedAndWrite(s_sort, len, r, a.topk, out_i, out_s);
}

// ---------------------------------------------------------------------------------------------
// Host side.

[[noreturn]] void Fail(const char* what) {
  std::fprintf(stderr, "IndexerTopkCuda: %s\n", what);
  std::fflush(stderr);
  std::abort();
}

struct Workspace {
  float* scores;
  int32_t* idx;
  int32_t* count;
  uint32_t* hist;  // split path only
  size_t bytes;
};

size_t AlignUp(size_t x) { return (x + 255) / 256 * 256; }

// Chunking of the split-keys path: nchunks chunks of chunk_tiles tiles each (the last may be short).
struct SplitPlan {
  int64_t nchunks, chunk_tiles, seg_cap;
};

SplitPlan PlanSplit(const IndexerTopkCudaParams& p) {
  const int64_t tiles = std::max<int64_t>(1, (p.L + kTileKeys - 1) / kTileKeys);
  const int64_t by_size = (tiles + kSplitMinChunkTiles - 1) / kSplitMinChunkTiles;
  const int64_t by_ctas = std::max<int64_t>(1, kSplitTargetCtas / std::max<int64_t>(p.T, 1));
  const int64_t want = std::max<int64_t>(1, std::min(by_size, by_ctas));
  SplitPlan s;
  s.chunk_tiles = (tiles + want - 1) / want;
  s.nchunks = (tiles + s.chunk_tiles - 1) / s.chunk_tiles;
  s.seg_cap = std::min<int64_t>(CapacityFor(p.topk), s.chunk_tiles * kTileKeys);
  return s;
}

bool UseSplit(const IndexerTopkCudaParams& p) {
  switch (p.path) {
    case IndexerTopkCudaPath::kQueryBlocks:
      return false;
    case IndexerTopkCudaPath::kSplitKeys:
      return true;
    default:
      return p.T <= kSplitMaxT && PlanSplit(p).nchunks >= 2;
  }
}

Workspace Carve(const IndexerTopkCudaParams& p) {
  const bool split = UseSplit(p);
  const SplitPlan plan = PlanSplit(p);
  const size_t T = static_cast<size_t>(p.T);
  const size_t entries = split ? T * static_cast<size_t>(plan.nchunks * plan.seg_cap)
                               : T * static_cast<size_t>(CapacityFor(p.topk));
  const size_t counts = split ? T * static_cast<size_t>(plan.nchunks) : T;
  const size_t s_bytes = AlignUp(entries * sizeof(float));
  const size_t i_bytes = AlignUp(entries * sizeof(int32_t));
  const size_t c_bytes = AlignUp(counts * sizeof(int32_t));
  const size_t h_bytes = split ? AlignUp(T * (kCoarseBins + kFineBins) * sizeof(uint32_t)) : 0;
  uint8_t* base = static_cast<uint8_t*>(p.workspace);
  return {reinterpret_cast<float*>(base), reinterpret_cast<int32_t*>(base + s_bytes),
          reinterpret_cast<int32_t*>(base + s_bytes + i_bytes),
          split ? reinterpret_cast<uint32_t*>(base + s_bytes + i_bytes + c_bytes) : nullptr,
          s_bytes + i_bytes + c_bytes + h_bytes};
}

template <int D, int NT>
void LaunchMain(const MainArgs& a, int64_t T, cudaStream_t stream) {
  const size_t smem = MainStageBytes<D>() + static_cast<size_t>(a.cap) * 8;
  auto kernel = IndexerTopkMainKernel<D, NT>;
  CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(smem)));
  const unsigned grid = static_cast<unsigned>((T + kWarps - 1) / kWarps);
  kernel<<<grid, kThreads, smem, stream>>>(a);
  CUDA_CHECK(cudaGetLastError());
}

template <int D>
void DispatchHeads(const MainArgs& a, int64_t T, cudaStream_t stream) {
  if (D == kWgD && a.H > 32 && static_cast<size_t>(a.cap) * 8 <= static_cast<size_t>(kWgScratchBytes)) {
    auto kernel = IndexerTopkMainWgmmaKernel;
    CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, kWgSmemBytes));
    const unsigned grid = static_cast<unsigned>((T + kWarps - 1) / kWarps);
    kernel<<<grid, kThreads, kWgSmemBytes, stream>>>(a);
    CUDA_CHECK(cudaGetLastError());
  } else if (a.H <= 8) {
    LaunchMain<D, 1>(a, T, stream);
  } else if (a.H <= 16) {
    LaunchMain<D, 2>(a, T, stream);
  } else if (a.H <= 32) {
    LaunchMain<D, 4>(a, T, stream);
  } else {
    LaunchMain<D, 8>(a, T, stream);
  }
}

template <int D, int NT>
void LaunchSplit(const SplitArgs& a, cudaStream_t stream) {
  constexpr bool kWg = D == kWgD && NT == 8;  // as in the kernel
  const size_t stage_bytes = kWg ? 1024 + kWgQBytes + kStages * kWgStageBytes : MainStageBytes<D>();
  const size_t smem = stage_bytes + static_cast<size_t>(a.seg_cap) * 8;
  auto kernel = IndexerTopkSplitKernel<D, NT>;
  CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(smem)));
  const dim3 grid(static_cast<unsigned>(a.T), static_cast<unsigned>(a.nchunks));
  kernel<<<grid, kThreads, smem, stream>>>(a);
  CUDA_CHECK(cudaGetLastError());
}

template <int D>
void DispatchSplitHeads(const SplitArgs& a, cudaStream_t stream) {
  if (a.H <= 8) {
    LaunchSplit<D, 1>(a, stream);
  } else if (a.H <= 16) {
    LaunchSplit<D, 2>(a, stream);
  } else if (a.H <= 32) {
    LaunchSplit<D, 4>(a, stream);
  } else {
    LaunchSplit<D, 8>(a, stream);
  }
}

void RunSplit(const IndexerTopkCudaParams& p, const Workspace& ws) {
  const SplitPlan plan = PlanSplit(p);
  if (plan.nchunks > kMaxChunks) Fail("internal: too many chunks");
  SplitArgs a;
  a.q = p.q;
  a.k = p.k;
  a.weights = p.weights;
  a.key_end = p.key_end;
  a.T = p.T;
  a.L = p.L;
  a.H = p.H;
  a.query_offset = p.query_offset;
  a.topk = static_cast<int>(p.topk);
  a.nchunks = static_cast<int>(plan.nchunks);
  a.chunk_tiles = static_cast<int>(plan.chunk_tiles);
  a.seg_cap = static_cast<int>(plan.seg_cap);
  a.abs_scale = std::fabs(p.scale);
  a.negate_q = p.scale < 0.f;
  a.cand_scores = ws.scores;
  a.cand_idx = ws.idx;
  a.cand_count = ws.count;
  a.hist = ws.hist;
  a.out_indices = p.out_indices;
  a.out_scores = p.out_scores;
  CUDA_CHECK(cudaMemsetAsync(ws.hist, 0, static_cast<size_t>(p.T) * (kCoarseBins + kFineBins) * sizeof(uint32_t),
                             p.stream));
  if (p.L == 0) {
    CUDA_CHECK(cudaMemsetAsync(ws.count, 0, static_cast<size_t>(p.T * plan.nchunks) * sizeof(int32_t), p.stream));
  } else {
    if (p.D == 32) {
      DispatchSplitHeads<32>(a, p.stream);
    } else if (p.D == 64) {
      DispatchSplitHeads<64>(a, p.stream);
    } else {
      DispatchSplitHeads<128>(a, p.stream);
    }
    const size_t fsmem = static_cast<size_t>(a.seg_cap) * 8;
    CUDA_CHECK(cudaFuncSetAttribute(IndexerTopkSplitFilterKernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                    static_cast<int>(fsmem)));
    IndexerTopkSplitFilterKernel<<<dim3(static_cast<unsigned>(p.T), static_cast<unsigned>(plan.nchunks)), kThreads,
                                   fsmem, p.stream>>>(a);
    CUDA_CHECK(cudaGetLastError());
  }
  int sort_len = 1;
  while (sort_len < a.topk) sort_len <<= 1;
  const size_t msmem = static_cast<size_t>(sort_len) * 8 + static_cast<size_t>(kMergeSmemEntries) * 8;
  CUDA_CHECK(cudaFuncSetAttribute(IndexerTopkSplitMergeKernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                  static_cast<int>(msmem)));
  IndexerTopkSplitMergeKernel<<<static_cast<unsigned>(p.T), kThreads, msmem, p.stream>>>(a, sort_len);
  CUDA_CHECK(cudaGetLastError());
}

bool Aligned16(const void* p) { return reinterpret_cast<uintptr_t>(p) % 16 == 0; }

}  // namespace

size_t IndexerTopkCudaWorkspaceBytes(const IndexerTopkCudaParams& p) {
  IndexerTopkCudaParams copy = p;
  copy.workspace = nullptr;
  return Carve(copy).bytes;
}

void IndexerTopkCuda(const IndexerTopkCudaParams& p) {
  if (p.T < 0 || p.L < 0 || p.topk < 0) Fail("negative size");
  if (p.T == 0 || p.topk == 0) return;
  if (p.topk > kMaxTopk) Fail("topk > 2048 is not supported");
  if (p.H < 1 || p.H > kMaxHeads) Fail("H must be in [1, 64]");
  if (p.D != 32 && p.D != 64 && p.D != 128) Fail("D must be 32, 64 or 128");
  if (p.L >= (int64_t{1} << 31)) Fail("L must be < 2^31");
  if (p.q == nullptr || p.weights == nullptr || p.out_indices == nullptr || (p.L > 0 && p.k == nullptr)) {
    Fail("null input or output pointer");
  }
  if (!Aligned16(p.q) || !Aligned16(p.k)) Fail("q and k must be 16-byte aligned");
  const Workspace ws = Carve(p);
  if (p.workspace == nullptr || p.workspace_bytes < ws.bytes) Fail("workspace missing or too small");
  constexpr int64_t kMaxGrid = 0x7fffffff;
  if (p.T > kMaxGrid) Fail("T too large");
  if (UseSplit(p)) {
    RunSplit(p, ws);
    return;
  }

  MainArgs a;
  a.q = p.q;
  a.k = p.k;
  a.weights = p.weights;
  a.key_end = p.key_end;
  a.T = p.T;
  a.L = p.L;
  a.H = p.H;
  a.query_offset = p.query_offset;
  a.topk = static_cast<int>(p.topk);
  a.cap = static_cast<int>(CapacityFor(p.topk));
  a.abs_scale = std::fabs(p.scale);
  a.negate_q = p.scale < 0.f;
  a.cand_scores = ws.scores;
  a.cand_idx = ws.idx;
  a.cand_count = ws.count;
  if (p.L == 0) {
    CUDA_CHECK(cudaMemsetAsync(ws.count, 0, static_cast<size_t>(p.T) * sizeof(int32_t), p.stream));
  } else if (p.D == 32) {
    DispatchHeads<32>(a, p.T, p.stream);
  } else if (p.D == 64) {
    DispatchHeads<64>(a, p.T, p.stream);
  } else {
    DispatchHeads<128>(a, p.T, p.stream);
  }

  FinalArgs f;
  f.cand_scores = ws.scores;
  f.cand_idx = ws.idx;
  f.cand_count = ws.count;
  f.topk = a.topk;
  f.cap = a.cap;
  f.sort_len = 1;
  while (f.sort_len < a.topk) f.sort_len <<= 1;
  f.out_indices = p.out_indices;
  f.out_scores = p.out_scores;
  const size_t smem = static_cast<size_t>(f.sort_len) * 8 + static_cast<size_t>(f.cap) * 8;
  CUDA_CHECK(cudaFuncSetAttribute(IndexerTopkFinalizeKernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                  static_cast<int>(smem)));
  IndexerTopkFinalizeKernel<<<static_cast<unsigned>(p.T), kThreads, smem, p.stream>>>(f);
  CUDA_CHECK(cudaGetLastError());
}

Status IndexerTopkCudaSupports(const IndexerTopkCudaSizes& s) {
  const auto unsupported = [](const char* name, int64_t v, const std::string& supported) {
    return Unimplemented(std::string("field '") + name + "' = " + std::to_string(v) +
                         " is not supported by the CUDA indexer top-k kernel (supported: " + supported + ")");
  };
  if (s.heads < 1 || s.heads > kMaxHeads) return unsupported(s.heads_name, s.heads, "1 to " + std::to_string(kMaxHeads));
  if (s.head_dim != 32 && s.head_dim != 64 && s.head_dim != 128) {
    return unsupported(s.head_dim_name, s.head_dim, "32, 64 or 128");
  }
  if (s.topk < 1 || s.topk > kMaxTopk) return unsupported(s.topk_name, s.topk, "1 to " + std::to_string(kMaxTopk));
  return Status::Ok();
}

}  // namespace indexcache
