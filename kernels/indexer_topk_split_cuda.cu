// Path B of the CUDA indexer top-k, split keys (decode: few queries): the split kernel (scores of
// one chunk of keys, mma.sync or wgmma), the filter kernel (drops entries below the threshold bin
// of the per-query histograms) and the merge kernel (exact top-k of the survivors, sorted). The
// algorithm is described in kernels/indexer_topk_cuda.h; the comments here are about the mechanics.
// The dispatcher (indexer_topk_cuda.cu) validates the parameters and carves the workspace before
// RunSplitKeys.
#include <cmath>
#include <cstddef>
#include <cstdint>

#include "core/cuda_check.h"
#include "kernels/indexer_topk_cuda_internal.h"
#include "kernels/indexer_topk_tiles.cuh"
#include "kernels/topk_select.cuh"

namespace indexcache {
namespace indexer_topk {
namespace {

static_assert(kThreads == kSelectThreads, "the selects of kernels/topk_select.cuh assume 256 threads");

// ---------------------------------------------------------------------------------------------
// Split-keys path (few queries): split kernel, filter kernel, merge kernel.

struct SplitArgs {
  const __nv_bfloat16* q;
  const __nv_bfloat16* k;
  const float* weights;
  const int32_t* key_end;
  const int32_t* key_begin;  // nullable: query t's keys start at row key_begin[t] of k
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

// Shared-memory plan of the split kernel. D = 128 with 33..64 heads (kWg) runs wgmma: q[t] (one
// query, swizzled) first, then kStages swizzled key stages, all from the dynamic shared memory
// rounded up to 1024 B (Bytes() includes the slack); otherwise kStages padded mma.sync stages. The
// compaction scratch (keys, then indices) for the (query, chunk) buffer of seg_cap entries follows.
template <int D, int NT>
struct SplitSmemPlan {
  static constexpr bool kWg = D == kWgD && NT == 8;
  static constexpr int kAlignSlack = kWg ? 1024 : 0;
  static constexpr int kQOff = 0;
  static constexpr int kQBytes = kWg ? kWgQBytes : 0;
  static constexpr int kStagesOff = kQOff + kQBytes;
  static constexpr int kStageBytes = kWg ? kWgStageBytes : kTileKeys * RowBytes<D>();  // one stage
  static constexpr int kKeysOff = kStagesOff + (kWg ? kStages * kWgStageBytes : MainStageBytes<D>());
  int seg_cap;  // buffer entries per (query, chunk)

  // The base the offsets are from: smem_raw itself, or rounded up to 1024 B for the swizzle.
  __device__ static uint8_t* Base(uint8_t* smem_raw) {
    if constexpr (kWg) {
      const uint32_t raw_addr = static_cast<uint32_t>(__cvta_generic_to_shared(smem_raw));
      return smem_raw + (((raw_addr + 1023u) & ~1023u) - raw_addr);
    }
    return smem_raw;
  }
  __device__ static uint8_t* Stages(uint8_t* smem) { return smem + kStagesOff; }
  __device__ static uint32_t* Keys(uint8_t* smem) { return reinterpret_cast<uint32_t*>(smem + kKeysOff); }
  __device__ int32_t* Indices(uint8_t* smem) const { return reinterpret_cast<int32_t*>(Keys(smem) + seg_cap); }
  __host__ __device__ size_t Bytes() const {
    return static_cast<size_t>(kAlignSlack) + kKeysOff + static_cast<size_t>(seg_cap) * 8;
  }
};

// One CTA per (query blockIdx.x, chunk blockIdx.y).
template <int D, int NT>
__global__ void __launch_bounds__(kThreads, 1) IndexerTopkSplitKernel(const SplitArgs a) {
  // D = 128 with 33..64 heads: the scores come from wgmma (as in IndexerTopkMainWgmmaKernel, the
  // same bits): q in shared memory, swizzled key stages; otherwise mma.sync from registers.
  using Plan = SplitSmemPlan<D, NT>;
  constexpr bool kWg = Plan::kWg;
  extern __shared__ __align__(16) uint8_t smem_raw[];
  const Plan plan{a.seg_cap};
  uint8_t* smem = Plan::Base(smem_raw);
  uint8_t* stages = Plan::Stages(smem);
  uint32_t* s_key = Plan::Keys(smem);
  int32_t* s_idx = plan.Indices(smem);
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
  // A query with its own key range reads only its own rows (tile rows past its end re-read its
  // last key; they score as invalid anyway); otherwise rows up to L exist.
  const __nv_bfloat16* keys = a.key_begin ? a.k + static_cast<int64_t>(a.key_begin[t]) * D : a.k;
  const int64_t key_limit = a.key_begin ? end : a.L;
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
      uint8_t* dst = stages + (i % kStages) * Plan::kStageBytes;
      const int64_t key0 = static_cast<int64_t>(tile_begin + i) * kTileKeys;
#pragma unroll
      for (int c = tid; c < kTileKeys * 16; c += kThreads) {
        const int row = c >> 4, ch = c & 15;
        int64_t key = key0 + row;
        if (key >= key_limit) key = key_limit - 1;
        CpAsync16(dst + (ch >> 3) * kWgStageBlock + row * 128 + (((ch & 7) ^ (row & 7)) << 4),
                  keys + key * D + ch * 8);
      }
      return;
    }
    uint8_t* dst = stages + (i % kStages) * Plan::kStageBytes;
    constexpr int kChunksPerRow = D / 8;
    const int64_t key0 = static_cast<int64_t>(tile_begin + i) * kTileKeys;
#pragma unroll
    for (int c = tid; c < kTileKeys * kChunksPerRow; c += kThreads) {
      const int row = c / kChunksPerRow, col = c % kChunksPerRow;
      int64_t key = key0 + row;
      if (key >= key_limit) key = key_limit - 1;  // rows past the limit are never valid: any finite data will do
      CpAsync16(dst + row * RowBytes<D>() + col * 16, keys + key * D + col * 8);
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
      *reinterpret_cast<uint4*>(smem + Plan::kQOff + (ch >> 3) * kWgQBlock + h * 128 + (((ch & 7) ^ (h & 7)) << 4)) = v;
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
    const uint32_t tile_addr = stage_base + (i % kStages) * Plan::kStageBytes + lane_off;
#pragma unroll 1
    for (int mt = warp; mt < kTileKeys / 16; mt += kWarps) {
      float acc[NT][4];
      if constexpr (kWg) {  // kTileKeys / 16 == kWarps: one pass, mt == warp, whole warpgroups
#if INDEXER_TOPK_HAS_WGMMA
        const int wg = warp >> 2;
        float accw[32];
        if (key0 + 64 * wg < end) {  // warpgroup-uniform
          const uint32_t smem_addr = static_cast<uint32_t>(__cvta_generic_to_shared(smem));
          WgIssue(accw, smem_addr + Plan::kStagesOff + (i % kStages) * Plan::kStageBytes + wg * 64 * 128,
                  smem_addr + Plan::kQOff);
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

// Shared-memory plan of the filter kernel: a copy of one (query, chunk) buffer, keys then indices.
struct FilterSmemPlan {
  int seg_cap;

  __device__ static uint32_t* Keys(uint8_t* smem) { return reinterpret_cast<uint32_t*>(smem); }
  __device__ int32_t* Indices(uint8_t* smem) const { return reinterpret_cast<int32_t*>(Keys(smem) + seg_cap); }
  __host__ __device__ size_t Bytes() const { return static_cast<size_t>(seg_cap) * 8; }
};

// One CTA per (query blockIdx.x, chunk blockIdx.y): drops the entries below the threshold bin.
__global__ void __launch_bounds__(kThreads) IndexerTopkSplitFilterKernel(const SplitArgs a) {
  extern __shared__ __align__(16) uint8_t smem[];
  const FilterSmemPlan plan{a.seg_cap};
  uint32_t* s_key = FilterSmemPlan::Keys(smem);
  int32_t* s_idx = plan.Indices(smem);
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

// Shared-memory plan of the merge kernel: the packed sort array (sort_len 64-bit entries), then
// the gathered survivors (kMergeSmemEntries keys, then as many indices).
struct MergeSmemPlan {
  int sort_len;

  __device__ static unsigned long long* Sort(uint8_t* smem) { return reinterpret_cast<unsigned long long*>(smem); }
  __device__ uint32_t* Keys(uint8_t* smem) const { return reinterpret_cast<uint32_t*>(Sort(smem) + sort_len); }
  __device__ int32_t* Indices(uint8_t* smem) const {
    return reinterpret_cast<int32_t*>(Keys(smem) + kMergeSmemEntries);
  }
  __host__ __device__ size_t Bytes() const {
    return static_cast<size_t>(sort_len) * 8 + static_cast<size_t>(kMergeSmemEntries) * 8;
  }
};

// One CTA per query: exact top-r of the surviving entries of all chunks, sorted, written.
__global__ void __launch_bounds__(kThreads) IndexerTopkSplitMergeKernel(const SplitArgs a, int sort_len) {
  extern __shared__ __align__(16) uint8_t smem[];
  const MergeSmemPlan plan{sort_len};
  unsigned long long* s_sort = MergeSmemPlan::Sort(smem);
  uint32_t* s_key = plan.Keys(smem);
  int32_t* s_idx = plan.Indices(smem);
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

template <int D, int NT>
void LaunchSplit(const SplitArgs& a, cudaStream_t stream) {
  const size_t smem = SplitSmemPlan<D, NT>{a.seg_cap}.Bytes();
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

}  // namespace

void RunSplitKeys(const IndexerTopkCudaParams& p, const Workspace& ws) {
  const SplitPlan plan = PlanSplit(p);
  if (plan.nchunks > kMaxChunks) Fail("internal: too many chunks");
  SplitArgs a;
  a.q = p.q;
  a.k = p.k;
  a.weights = p.weights;
  a.key_end = p.key_end;
  a.key_begin = p.key_begin;
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
    const size_t fsmem = FilterSmemPlan{a.seg_cap}.Bytes();
    CUDA_CHECK(cudaFuncSetAttribute(IndexerTopkSplitFilterKernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                    static_cast<int>(fsmem)));
    IndexerTopkSplitFilterKernel<<<dim3(static_cast<unsigned>(p.T), static_cast<unsigned>(plan.nchunks)), kThreads,
                                   fsmem, p.stream>>>(a);
    CUDA_CHECK(cudaGetLastError());
  }
  int sort_len = 1;
  while (sort_len < a.topk) sort_len <<= 1;
  const size_t msmem = MergeSmemPlan{sort_len}.Bytes();
  CUDA_CHECK(cudaFuncSetAttribute(IndexerTopkSplitMergeKernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                  static_cast<int>(msmem)));
  IndexerTopkSplitMergeKernel<<<static_cast<unsigned>(p.T), kThreads, msmem, p.stream>>>(a, sort_len);
  CUDA_CHECK(cudaGetLastError());
}

}  // namespace indexer_topk
}  // namespace indexcache
