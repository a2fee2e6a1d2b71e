// Fused lightning-indexer scores + exact top-k on the GPU. The algorithm is described in
// kernels/indexer_topk_cuda.h; the comments here are about the mechanics.
#include "kernels/indexer_topk_cuda.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>

#include "core/cuda_check.h"

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

int64_t CapacityFor(int64_t topk) {
  return std::max<int64_t>(INDEXER_TOPK_CAP_FACTOR * topk, 1024) + kTileKeys;
}

// ---------------------------------------------------------------------------------------------
// Small device helpers.

// Order-preserving map float -> uint32 (larger float, larger key); exact inverse below.
__device__ __forceinline__ uint32_t OrderedKey(float f) {
  const uint32_t u = __float_as_uint(f);
  return (u & 0x80000000u) ? ~u : (u | 0x80000000u);
}
__device__ __forceinline__ float KeyToFloat(uint32_t k) {
  return __uint_as_float((k & 0x80000000u) ? (k & 0x7fffffffu) : ~k);
}

__device__ __forceinline__ void CpAsync16(void* smem, const void* gmem) {
  const uint32_t s = static_cast<uint32_t>(__cvta_generic_to_shared(smem));
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16;\n" ::"r"(s), "l"(gmem));
}
__device__ __forceinline__ void CpAsyncCommit() { asm volatile("cp.async.commit_group;\n" ::); }
template <int N>
__device__ __forceinline__ void CpAsyncWait() {
  asm volatile("cp.async.wait_group %0;\n" ::"n"(N));
}

__device__ __forceinline__ void LdMatrixX4(uint32_t addr, uint32_t& a0, uint32_t& a1, uint32_t& a2, uint32_t& a3) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(a0), "=r"(a1), "=r"(a2), "=r"(a3)
               : "r"(addr));
}

// c += a (16x16 row-major bf16) * b (16x8 col-major bf16), fp32 accumulate.
__device__ __forceinline__ void MmaBf16(float* c, uint32_t a0, uint32_t a1, uint32_t a2, uint32_t a3, uint32_t b0,
                                        uint32_t b1) {
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
      "{%0,%1,%2,%3};\n"
      : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
      : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "r"(b0), "r"(b1));
}

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
  uint32_t prefix = mx & mask_above(hi);
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

  // q[t] as B fragments: b[j][kk][0] = q[8j+g][16kk+2t4 .. +1], b[j][kk][1] = the same at +8.
  uint32_t bq[NT][KS][2];
  float wsc[NT][2];
#pragma unroll
  for (int j = 0; j < NT; ++j) {
    const int head = 8 * j + g;
    const bool hv = active && head < a.H;
    const uint32_t* qrow = reinterpret_cast<const uint32_t*>(a.q + (t * a.H + head) * D);
#pragma unroll
    for (int kk = 0; kk < KS; ++kk) {
      uint32_t b0 = hv ? __ldg(qrow + (16 * kk + 2 * t4) / 2) : 0u;
      uint32_t b1 = hv ? __ldg(qrow + (16 * kk + 8 + 2 * t4) / 2) : 0u;
      if (a.negate_q) {
        b0 ^= 0x80008000u;
        b1 ^= 0x80008000u;
      }
      bq[j][kk][0] = b0;
      bq[j][kk][1] = b1;
    }
#pragma unroll
    for (int c = 0; c < 2; ++c) {
      const int h = 8 * j + 2 * t4 + c;
      wsc[j][c] = (active && h < a.H) ? a.weights[t * a.H + h] * a.abs_scale : 0.f;
    }
  }
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
#pragma unroll
        for (int j = 0; j < NT; ++j) acc[j][0] = acc[j][1] = acc[j][2] = acc[j][3] = 0.f;
#pragma unroll
        for (int kk = 0; kk < KS; ++kk) {
          uint32_t a0, a1, a2, a3;
          LdMatrixX4(tile_addr + mt * 16 * RowBytes<D>() + kk * 32, a0, a1, a2, a3);
#pragma unroll
          for (int j = 0; j < NT; ++j) MmaBf16(acc[j], a0, a1, a2, a3, bq[j][kk][0], bq[j][kk][1]);
        }
        // acc[j][0..1]: key g, heads 8j+2t4+{0,1}; acc[j][2..3]: key g+8, same heads.
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
        // Lane t4 == 0 offers key g, lane t4 == 1 key g + 8.
        const int key = key0 + mt * 16 + g + (t4 == 1 ? 8 : 0);
        const float sc = t4 == 0 ? s_lo : s_hi;
        const bool pass = t4 < 2 && key < end && sc > thr;
        const uint32_t ballot = __ballot_sync(0xffffffffu, pass);
        if (ballot) {
          if (pass) {
            const int pos = count + __popc(ballot & ((1u << lane) - 1u));
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
          const float nt = CompactCandidates(a.cand_scores + tw * a.cap, a.cand_idx + tw * a.cap, n, a.topk, s_key,
                                             s_idx, sel);
          if (tid == 0) {
            s_count[w] = a.topk;
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
  int32_t* out_i = a.out_indices + t * a.topk;
  float* out_s = a.out_scores ? a.out_scores + t * a.topk : nullptr;
  for (int j = tid; j < a.topk; j += kThreads) {
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
  size_t bytes;
};

size_t AlignUp(size_t x) { return (x + 255) / 256 * 256; }

Workspace Carve(const IndexerTopkCudaParams& p) {
  const size_t entries = static_cast<size_t>(p.T) * static_cast<size_t>(CapacityFor(p.topk));
  const size_t s_bytes = AlignUp(entries * sizeof(float));
  const size_t i_bytes = AlignUp(entries * sizeof(int32_t));
  const size_t c_bytes = AlignUp(static_cast<size_t>(p.T) * sizeof(int32_t));
  uint8_t* base = static_cast<uint8_t*>(p.workspace);
  return {reinterpret_cast<float*>(base), reinterpret_cast<int32_t*>(base + s_bytes),
          reinterpret_cast<int32_t*>(base + s_bytes + i_bytes), s_bytes + i_bytes + c_bytes};
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
  if (a.H <= 8) {
    LaunchMain<D, 1>(a, T, stream);
  } else if (a.H <= 16) {
    LaunchMain<D, 2>(a, T, stream);
  } else if (a.H <= 32) {
    LaunchMain<D, 4>(a, T, stream);
  } else {
    LaunchMain<D, 8>(a, T, stream);
  }
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
  constexpr int64_t kMaxGrid = 0x7fffffff;
  if (p.T > kMaxGrid) Fail("T too large");
  IndexerTopkFinalizeKernel<<<static_cast<unsigned>(p.T), kThreads, smem, p.stream>>>(f);
  CUDA_CHECK(cudaGetLastError());
}

}  // namespace indexcache
