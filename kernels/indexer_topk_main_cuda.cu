// Path A of the CUDA indexer top-k, query blocks (prefill): the main kernel (mma.sync), its wgmma
// variant (D = 128, 33..64 heads) and the finalize kernel. The algorithm is described in
// kernels/indexer_topk_cuda.h; the comments here are about the mechanics. The dispatcher
// (indexer_topk_cuda.cu) validates the parameters and carves the workspace before RunQueryBlocks.
#include <cmath>
#include <cstddef>
#include <cstdint>

#include "core/cuda_check.h"
// The wgmma kernel below must contain no function call (see kernels/topk_select.cuh): an overflow traps.
#define TOPK_SELECT_OVERFLOW_TRAP_ONLY 1
#include "kernels/indexer_topk_cuda_internal.h"
#include "kernels/indexer_topk_tiles.cuh"
#include "kernels/topk_select.cuh"

namespace indexcache {
namespace indexer_topk {
namespace {

static_assert(kThreads == kSelectThreads, "the selects of kernels/topk_select.cuh assume 256 threads");

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

// Shared-memory plan of the main kernel: kStages key stages of kTileKeys padded rows, then the
// compaction scratch (keys, then indices) for one candidate buffer of `cap` entries.
template <int D>
struct MainSmemPlan {
  static constexpr int kStageBytes = kTileKeys * RowBytes<D>();  // one pipeline stage
  static constexpr int kStagesOff = 0;
  static constexpr int kKeysOff = MainStageBytes<D>();  // kStages * kStageBytes
  int cap;  // candidate-buffer entries

  __device__ uint8_t* Stages(uint8_t* smem) const { return smem + kStagesOff; }
  __device__ uint32_t* Keys(uint8_t* smem) const { return reinterpret_cast<uint32_t*>(smem + kKeysOff); }
  __device__ int32_t* Indices(uint8_t* smem) const { return reinterpret_cast<int32_t*>(Keys(smem) + cap); }
  __host__ __device__ size_t Bytes() const { return kKeysOff + static_cast<size_t>(cap) * 8; }
};

// NT: n-tiles of 8 heads (H <= 8 * NT).
template <int D, int NT>
__global__ void __launch_bounds__(kThreads, 1) IndexerTopkMainKernel(const MainArgs a) {
  extern __shared__ __align__(16) uint8_t smem[];
  const MainSmemPlan<D> plan{a.cap};
  uint8_t* stages = plan.Stages(smem);
  uint32_t* s_key = plan.Keys(smem);
  int32_t* s_idx = plan.Indices(smem);
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
    uint8_t* dst = stages + (tile % kStages) * MainSmemPlan<D>::kStageBytes;
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
      const uint32_t tile_addr = stage_base + (tile % kStages) * MainSmemPlan<D>::kStageBytes + lane_off;
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

}  // namespace

// Shared-memory plan of the wgmma variant (fixed: no size depends on the call). Offsets are from
// the dynamic shared memory rounded up to 1024 B (the swizzle's alignment); kBytes includes the
// slack for that rounding. The compaction scratch of tile `tile` is the stage it has just freed
// plus the 1 KiB next to it (ScratchOff), so a candidate buffer must fit in kScratchBytes.
// (Outside the unnamed namespace: the compute_90 pass, where the kernel is a trap, references
// none of it and would warn about unused internal members.)
struct WgmmaMainSmemPlan {
  static constexpr int kQBlocks = kWarps * kWgQBlock;  // one K-block of all 8 queries
  static constexpr int kExtra = 1024;                       // scratch = free stage + 1 KiB
  static constexpr int kQOff = 0;                           // the 8 queries: 2 K-blocks of kQBlocks
  static constexpr int kExtraAOff = kQOff + kWarps * kWgQBytes;  // 131072
  static constexpr int kStage0Off = kExtraAOff + kExtra;
  static constexpr int kStage1Off = kStage0Off + kWgStageBytes;
  static constexpr int kUsed = kStage1Off + kWgStageBytes + kExtra;
  static constexpr int kBytes = kUsed + 1024;  // slack to align the base to 1024 B
  static constexpr int kScratchBytes = kWgStageBytes + kExtra;

  __host__ __device__ static constexpr int StageOff(int tile) { return (tile & 1) ? kStage1Off : kStage0Off; }
  // Tile 0's stage is preceded by the extra 1 KiB, tile 1's followed by it.
  __host__ __device__ static constexpr int ScratchOff(int tile) { return (tile & 1) ? kStage1Off : kExtraAOff; }
  // Whether a candidate buffer of `cap` entries (keys and indices) fits the compaction scratch.
  __host__ __device__ static constexpr bool Fits(int64_t cap) {
    return static_cast<size_t>(cap) * 8 <= static_cast<size_t>(kScratchBytes);
  }
};

namespace {

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
  // Set when a candidate position falls past its buffer (a bookkeeping bug); the kernel traps after
  // the tile. A trap (or the printing CandidateOverflow, a call) inside the epilogue's divergent
  // branch made ptxas serialise every wgmma of this kernel (warnings C7510 / C7518).
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
    *reinterpret_cast<uint4*>(smem + WgmmaMainSmemPlan::kQOff + (ch >> 3) * WgmmaMainSmemPlan::kQBlocks + qi * kWgQBlock + h * 128 +
                              (((ch & 7) ^ (h & 7)) << 4)) = v;
  }
  __syncthreads();
  int max_end = 0;
#pragma unroll
  for (int w = 0; w < kWarps; ++w) max_end = max(max_end, s_end[w]);
  const int num_tiles = (max_end + kWgTileKeys - 1) / kWgTileKeys;

  auto load_tile = [&](int tile) {
    uint8_t* dst = smem + WgmmaMainSmemPlan::StageOff(tile);
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
    const uint32_t key_stage = sbase + WgmmaMainSmemPlan::StageOff(tile);
    const uint32_t q_wg = sbase + WgmmaMainSmemPlan::kQOff + (4 * wg) * kWgQBlock;
    // Steps st = 2 p + hf: queries 4wg + 2p and 4wg + 2p + 1 (N = 128), keys [64 hf, 64 hf + 64)
    // of the tile; two steps in flight.
    auto issue = [&](float (&acc)[64], int st) {
      WgIssue2(acc, key_stage + (st & 1) * (64 * 128), q_wg + (st >> 1) * 2 * kWgQBlock, WgmmaMainSmemPlan::kQBlocks);
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
      uint8_t* scratch = smem + WgmmaMainSmemPlan::ScratchOff(tile);
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
    if (s_overflow != 0) CandidateOverflow("main-wgmma", t0, 0, a.cap);  // after the barrier above
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
  int scratch_cap;  // <= cap: the most entries a buffer holds here (the compaction scratch's size)
  int32_t* out_indices;
  float* out_scores;
};


// Shared-memory plan of the finalize kernel: the packed sort array (sort_len 64-bit entries), then
// the compaction scratch (keys, then indices) for one candidate buffer of `cap` entries.
struct FinalizeSmemPlan {
  int sort_len, cap;

  __device__ unsigned long long* Sort(uint8_t* smem) const { return reinterpret_cast<unsigned long long*>(smem); }
  __device__ uint32_t* Keys(uint8_t* smem) const { return reinterpret_cast<uint32_t*>(Sort(smem) + sort_len); }
  __device__ int32_t* Indices(uint8_t* smem) const { return reinterpret_cast<int32_t*>(Keys(smem) + cap); }
  __host__ __device__ size_t Bytes() const { return static_cast<size_t>(sort_len) * 8 + static_cast<size_t>(cap) * 8; }
};

__global__ void __launch_bounds__(kThreads) IndexerTopkFinalizeKernel(const FinalArgs a) {
  extern __shared__ __align__(16) uint8_t smem[];
  const FinalizeSmemPlan plan{a.sort_len, a.scratch_cap};
  unsigned long long* s_sort = plan.Sort(smem);
  uint32_t* s_key = plan.Keys(smem);
  int32_t* s_idx = plan.Indices(smem);
  __shared__ SelectSmem sel;

  const int tid = threadIdx.x;
  const int64_t t = blockIdx.x;
  float* gs = a.cand_scores + t * a.cap;
  int32_t* gi = a.cand_idx + t * a.cap;
  const int n = a.cand_count[t];
  if (n < 0 || n > a.scratch_cap) CandidateOverflow("finalize", t, n, a.scratch_cap);
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
// Host side.

template <int D, int NT>
void LaunchMain(const MainArgs& a, int64_t T, cudaStream_t stream) {
  const size_t smem = MainSmemPlan<D>{a.cap}.Bytes();
  auto kernel = IndexerTopkMainKernel<D, NT>;
  CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(smem)));
  const unsigned grid = static_cast<unsigned>((T + kWarps - 1) / kWarps);
  kernel<<<grid, kThreads, smem, stream>>>(a);
  CUDA_CHECK(cudaGetLastError());
}

template <int D>
void DispatchHeads(const MainArgs& a, int64_t T, cudaStream_t stream) {
  if (D == kWgD && a.H > 32 && WgmmaMainSmemPlan::Fits(a.cap)) {
    auto kernel = IndexerTopkMainWgmmaKernel;
    CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, WgmmaMainSmemPlan::kBytes));
    const unsigned grid = static_cast<unsigned>((T + kWarps - 1) / kWarps);
    kernel<<<grid, kThreads, WgmmaMainSmemPlan::kBytes, stream>>>(a);
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

}  // namespace

void RunQueryBlocks(const IndexerTopkCudaParams& p, const Workspace& ws) {
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
  FinalizeQueryBlocks(p, ws);
}

void FinalizeQueryBlocks(const IndexerTopkCudaParams& p, const Workspace& ws, int64_t max_count) {
  FinalArgs f;
  f.cand_scores = ws.scores;
  f.cand_idx = ws.idx;
  f.cand_count = ws.count;
  f.topk = static_cast<int>(p.topk);
  f.cap = static_cast<int>(QueryBlockCapacity(p));
  f.sort_len = 1;
  while (f.sort_len < f.topk) f.sort_len <<= 1;
  f.scratch_cap = max_count > 0 && max_count < f.cap ? static_cast<int>(max_count) : f.cap;
  f.out_indices = p.out_indices;
  f.out_scores = p.out_scores;
  const size_t smem = FinalizeSmemPlan{f.sort_len, f.scratch_cap}.Bytes();
  CUDA_CHECK(cudaFuncSetAttribute(IndexerTopkFinalizeKernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                  static_cast<int>(smem)));
  IndexerTopkFinalizeKernel<<<static_cast<unsigned>(p.T), kThreads, smem, p.stream>>>(f);
  CUDA_CHECK(cudaGetLastError());
}

}  // namespace indexer_topk
}  // namespace indexcache
