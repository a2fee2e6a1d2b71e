// Internal to the CUDA indexer top-k (the interface is kernels/indexer_topk_cuda.h): what the thin
// dispatcher (indexer_topk_cuda.cu) and the two paths share, host-side C++ only.
//   - indexer_topk_main_cuda.cu:  path A, query blocks (main kernel, its wgmma variant, finalize);
//   - indexer_topk_split_cuda.cu: path B, split keys (split, filter and merge kernels);
//   - kernels/topk_select.cuh:    the block-wide radix select / compaction / sort device library;
//   - kernels/indexer_topk_tiles.cuh: the score-tile device code both paths run (q fragments,
//     mma.sync / wgmma key tiles, the head sum).
// The dispatcher validates the parameters and carves the workspace before it calls a path.
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>

#include "kernels/indexer_topk_cuda.h"

namespace indexcache {
namespace indexer_topk {

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

// Candidate-buffer entries per query (path A) or the most per (query, chunk) (path B).
inline int64_t CapacityFor(int64_t topk) {
  return std::max<int64_t>(INDEXER_TOPK_CAP_FACTOR * topk, 1024) + kTileKeys;
}

// The FP8 main kernel's key tile and candidate buffers (indexer_topk_fp8_cuda.cu): tiles of 256 keys
// and buffers of 4 topk entries (+ one tile of slack) -- twice the bf16 ones, so that a query's
// buffer is compacted about half as often (each compaction is a CTA-wide pause with the tensor
// cores idle; at fp8 rates that pause is a larger share of the time).
#ifndef INDEXER_TOPK_FP8_TILE_KEYS
#define INDEXER_TOPK_FP8_TILE_KEYS 256
#endif
constexpr int kFp8TileKeys = INDEXER_TOPK_FP8_TILE_KEYS;
inline int64_t Fp8CapacityFor(int64_t topk) { return std::max<int64_t>(4 * topk, 1024) + kFp8TileKeys; }
// Candidate-buffer entries per query of path A for these params (bf16 or FP8 inputs).
inline int64_t QueryBlockCapacity(const IndexerTopkCudaParams& p) {
  return p.q_fp8 != nullptr ? Fp8CapacityFor(p.topk) : CapacityFor(p.topk);
}

// The workspace, carved by the dispatcher (CarveWorkspace in indexer_topk_cuda.cu).
struct Workspace {
  float* scores;
  int32_t* idx;
  int32_t* count;
  uint32_t* hist;  // split path only
  size_t bytes;
};

// Chunking of the split-keys path: nchunks chunks of chunk_tiles tiles each (the last may be short).
struct SplitPlan {
  int64_t nchunks, chunk_tiles, seg_cap;
};

inline SplitPlan PlanSplit(const IndexerTopkCudaParams& p) {
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

// Prints "IndexerTopkCuda: <what>" and aborts.
[[noreturn]] void Fail(const char* what);

// Path A (indexer_topk_main_cuda.cu): main kernel (mma.sync, or wgmma for D = 128 with 33..64
// heads) and the finalize kernel. `p` is validated, `ws` carved for this path.
void RunQueryBlocks(const IndexerTopkCudaParams& p, const Workspace& ws);
// Path A's finalize kernel alone (indexer_topk_main_cuda.cu): the exact top-k of each query's
// candidate buffer (ws.count entries), sorted, into p.out_indices / p.out_scores. max_count > 0:
// no buffer holds more than that many entries (the kernel's scratch shrinks to it: more CTAs per SM).
void FinalizeQueryBlocks(const IndexerTopkCudaParams& p, const Workspace& ws, int64_t max_count = -1);
// Path A with FP8 inputs (indexer_topk_fp8_cuda.cu): the e4m3 wgmma main kernel, then the finalize
// kernel above. `p` is validated (D = 128, q_fp8 set), `ws` carved for path A.
void RunQueryBlocksFp8(const IndexerTopkCudaParams& p, const Workspace& ws);
// Path B (indexer_topk_split_cuda.cu): split, filter and merge kernels.
void RunSplitKeys(const IndexerTopkCudaParams& p, const Workspace& ws);

}  // namespace indexer_topk
}  // namespace indexcache
