// Block-wide (256-thread) radix select, candidate compaction and packed bitonic sort: the selection
// library of the CUDA indexer top-k (kernels/indexer_topk_cuda.h describes the algorithm). Device
// code only; every function is called by all 256 threads of a block with the same arguments.
//
// Keys are the order-preserving uint32 images of fp32 scores (OrderedKey); ties in a key are broken
// toward the lower index (a second radix select on ~index). Candidate buffers are (score, index)
// pairs in global memory, compacted in place through shared-memory scratch the caller provides.
//
// Include from .cu files only. The definitions have internal linkage (an unnamed namespace): each
// .cu compiles its own copy, as device code of a whole-program (non -rdc) build does anyway.
#pragma once

#include <cstdint>
#include <cmath>
#include <cstdio>

namespace indexcache {
namespace {

constexpr int kSelectWarps = 8;                     // the block the selects are written for
constexpr int kSelectThreads = kSelectWarps * 32;   // 256: one histogram bin per thread

// A candidate buffer that would overflow is a bug in the compaction bookkeeping: stop the kernel
// with a message instead of writing past the buffer (the cost is one compare per survivor).
// A translation unit whose kernels run wgmma defines TOPK_SELECT_OVERFLOW_TRAP_ONLY before including
// this file: then the check traps without the message, because printf is a function call and any
// call in a kernel that runs wgmma makes ptxas serialise all of its wgmma instructions (warning
// C7510, "wgmma pipeline crossing function boundary"), which costs far more than the message is worth.
#ifdef TOPK_SELECT_OVERFLOW_TRAP_ONLY
__device__ __forceinline__ void CandidateOverflow(const char*, int64_t, int, int) { __trap(); }
#else
__device__ __noinline__ void CandidateOverflow(const char* where, int64_t t, int n, int cap) {
  printf("indexer top-k: candidate buffer overflow in %s: query %lld, count %d, capacity %d\n", where,
         static_cast<long long>(t), n, cap);
  __trap();
}
#endif

// The block barrier of every function below. A translation unit whose kernel runs more than 256
// threads defines TOPK_SELECT_SYNC before including this file as a named barrier over the 256
// threads that call these functions (threads 0..255); by default it is __syncthreads().
#ifndef TOPK_SELECT_SYNC
#define TOPK_SELECT_SYNC() __syncthreads()
#endif

// Order-preserving map float -> uint32 (larger float, larger key); exact inverse below.
__device__ __forceinline__ uint32_t OrderedKey(float f) {
  const uint32_t u = __float_as_uint(f);
  return (u & 0x80000000u) ? ~u : (u | 0x80000000u);
}
__device__ __forceinline__ float KeyToFloat(uint32_t k) {
  return __uint_as_float((k & 0x80000000u) ? (k & 0x7fffffffu) : ~k);
}


// ---------------------------------------------------------------------------------------------
// Block-wide radix select (256 threads).

struct SelectSmem {
  uint32_t hist[256];
  uint32_t warp_tot[kSelectWarps];
  uint32_t red_min[kSelectWarps], red_max[kSelectWarps];
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
  for (int i = tid; i < n; i += kSelectThreads) {
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
  TOPK_SELECT_SYNC();
  mn = 0xffffffffu;
  mx = 0u;
  cnt = 0u;
#pragma unroll
  for (int w = 0; w < kSelectWarps; ++w) {
    mn = min(mn, sm.red_min[w]);
    mx = max(mx, sm.red_max[w]);
    cnt += sm.warp_tot[w];
  }
  TOPK_SELECT_SYNC();  // warp_tot is reused by the scans below

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
    TOPK_SELECT_SYNC();
    for (int i = tid; i < n; i += kSelectThreads) {
      if (pred(i)) {
        const uint32_t k = key(i);
        if ((k & hmask) == prefix) atomicAdd(&sm.hist[(k >> sh) & dmask], 1u);
      }
    }
    TOPK_SELECT_SYNC();
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
    TOPK_SELECT_SYNC();
    for (int w = 0; w < warp; ++w) incl += sm.warp_tot[w];
    const uint32_t excl = incl - h;
    if (h > 0 && excl < static_cast<uint32_t>(rem) && static_cast<uint32_t>(rem) <= incl) {
      sm.bcast[0] = static_cast<uint32_t>(d);
      sm.bcast[1] = excl;
      sm.bcast[2] = h;
    }
    TOPK_SELECT_SYNC();
    prefix |= sm.bcast[0] << sh;
    rem -= static_cast<int>(sm.bcast[1]);
    num_eq = static_cast<int>(sm.bcast[2]);
    hi = sh - 1;
    TOPK_SELECT_SYNC();  // bcast / warp_tot / hist are rewritten by the next pass
  }
  return {prefix, rem, num_eq};
}

// Compacts the candidate buffer (gs, gi)[0, n) in place to exactly its r best entries
// (score desc, index asc; indices are distinct), r < n, in arbitrary order. s_key/s_idx: n entries
// of shared scratch. Returns the score of the r-th best. All 256 threads call it.
__device__ float CompactCandidates(float* gs, int32_t* gi, int n, int r, uint32_t* s_key, int32_t* s_idx,
                                   SelectSmem& sm) {
  const int tid = threadIdx.x, lane = tid & 31;
  for (int i = tid; i < n; i += kSelectThreads) {
    s_key[i] = OrderedKey(gs[i]);
    s_idx[i] = gi[i];
  }
  TOPK_SELECT_SYNC();
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
  TOPK_SELECT_SYNC();
  for (int base = 0; base < n; base += kSelectThreads) {
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
  TOPK_SELECT_SYNC();
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
  for (int i = tid; i < n; i += kSelectThreads) {
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
  TOPK_SELECT_SYNC();
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
  int kept = n;
  bool done = false;
  uint32_t low = 0;
  while (hi >= 0) {
    const int sh = hi >= 7 ? hi - 7 : 0;
    const uint32_t dmask = (2u << (hi - sh)) - 1u;
    const uint32_t hmask = mask_above(hi);
    sm.hist[tid] = 0;
    TOPK_SELECT_SYNC();
    for (int i = tid; i < n; i += kSelectThreads) {
      const uint32_t k = s_key[i];
      if ((k & hmask) == prefix) atomicAdd(&sm.hist[(k >> sh) & dmask], 1u);
    }
    TOPK_SELECT_SYNC();
    const int d = 255 - tid;
    const uint32_t h = sm.hist[d];
    uint32_t incl = h;
#pragma unroll
    for (int o = 1; o < 32; o <<= 1) {
      const uint32_t v = __shfl_up_sync(0xffffffffu, incl, o);
      if (lane >= o) incl += v;
    }
    if (lane == 31) sm.warp_tot[warp] = incl;
    TOPK_SELECT_SYNC();
    for (int w = 0; w < warp; ++w) incl += sm.warp_tot[w];
    const uint32_t excl = incl - h;
    if (h > 0 && excl < static_cast<uint32_t>(rem) && static_cast<uint32_t>(rem) <= incl) {
      sm.bcast[0] = static_cast<uint32_t>(d);
      sm.bcast[1] = excl;
      sm.bcast[2] = h;
    }
    TOPK_SELECT_SYNC();
    prefix |= sm.bcast[0] << sh;
    rem -= static_cast<int>(sm.bcast[1]);
    kept = (r - rem) + static_cast<int>(sm.bcast[2]);  // entries above the bin plus the bin
    hi = sh - 1;
    TOPK_SELECT_SYNC();  // bcast / warp_tot / hist are rewritten by the next pass
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
  TOPK_SELECT_SYNC();
  for (int base = 0; base < n; base += kSelectThreads) {
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
  TOPK_SELECT_SYNC();
  if (tid == 0 && sm.counter != kept) CandidateOverflow("compaction count", -1, sm.counter, kept);
  *new_thr = KeyToFloat(low);
  return kept;
}

// s_sort[0, len) (len a power of two, filled and synchronised): r packed entries
// (OrderedKey(score) << 32) | ~index, then zeros. Sorts them descending (score desc, index asc) and
// writes row `out_i` / `out_s` (may be null) of topk entries, padding past r. All threads call it.
__device__ void SortPackedAndWrite(unsigned long long* s_sort, int len, int r, int topk, int32_t* out_i,
                                   float* out_s) {
  const int tid = threadIdx.x;
  for (int size = 2; size <= len; size <<= 1) {
    for (int stride = size >> 1; stride > 0; stride >>= 1) {
      for (int i = tid; i < len / 2; i += kSelectThreads) {
        const int lo = 2 * i - (i & (stride - 1));
        const int hi = lo + stride;
        const bool desc = (lo & size) == 0;
        const unsigned long long x = s_sort[lo], y = s_sort[hi];
        if ((x < y) == desc) {
          s_sort[lo] = y;
          s_sort[hi] = x;
        }
      }
      TOPK_SELECT_SYNC();
    }
  }
  for (int j = tid; j < topk; j += kSelectThreads) {
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
  TOPK_SELECT_SYNC();
  uint32_t before = 0, tot = 0;
#pragma unroll
  for (int w = 0; w < kSelectWarps; ++w) {
    if (w < warp) before += warp_tot[w];
    tot += warp_tot[w];
  }
  TOPK_SELECT_SYNC();  // warp_tot is reused
  *total = tot;
  return incl + before;
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
  TOPK_SELECT_SYNC();
  for (int base = 0; base < n; base += kSelectThreads) {
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
  TOPK_SELECT_SYNC();
}

}  // namespace
}  // namespace indexcache
