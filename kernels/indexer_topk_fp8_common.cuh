// The FP8 indexer main kernels' shared pieces: the shared-memory plan, the kernel arguments and
// the e4m3 wgmma step. Internal to kernels/indexer_topk_fp8_cuda.cu, which includes it (and the
// kernel headers) after defining the TOPK_SELECT_* macros that kernels/topk_select.cuh reads.
#pragma once

#include <cstdint>

#include "kernels/indexer_topk_cuda_internal.h"
#include "kernels/indexer_topk_tiles.cuh"
#include "kernels/topk_select.cuh"

namespace indexcache {
namespace indexer_topk {

// Shared-memory plan of the FP8 main kernel (fixed sizes). Offsets are from the dynamic shared
// memory rounded up to 1024 B (the swizzle's alignment); kBytes includes the slack for that.
// (Outside the unnamed namespace, as WgmmaMainSmemPlan: the compute_90 pass references none of it.)
struct Fp8MainSmemPlan {
  static constexpr int kD = 128;                        // e4m3 per row = bytes per row
  static constexpr int kTile = kFp8TileKeys;            // keys per stage
  static constexpr int kStages = kTile == 128 ? 3 : 2;  // cp.async pipeline depth (48 or 64 KiB)
  static constexpr int kQBytes = 64 * kD;               // one query: 64 heads x 128 B
  static constexpr int kStageBytes = kTile * kD;
  static constexpr int kQOff = 0;                       // the 8 queries
  static constexpr int kStagesOff = kQOff + kWarps * kQBytes;  // 65536
  static constexpr int kScratchOff = kStagesOff + kStages * kStageBytes;
  // Compaction scratch: keys then indices of one candidate buffer of the largest capacity.
  static constexpr int kScratchBytes = (4 * kMaxTopk + kTile) * 8;  // Fp8CapacityFor(kMaxTopk) entries
  static constexpr int kUsed = kScratchOff + kScratchBytes;
  static constexpr int kBytes = kUsed + 1024;  // slack to align the base to 1024 B

  __host__ __device__ static constexpr int StageOff(int tile) { return kStagesOff + (tile % kStages) * kStageBytes; }
  __host__ __device__ static constexpr bool Fits(int64_t cap) {
    return static_cast<size_t>(cap) * 8 <= static_cast<size_t>(kScratchBytes);
  }
};
static_assert(Fp8MainSmemPlan::kBytes <= 227 * 1024, "FP8 main kernel shared memory");
// The buffers' slack is one tile: a compaction keeps <= topk + kTile entries (its limit below),
// and topk + kTile + kTile <= Fp8CapacityFor(topk) for every topk.

namespace {

static_assert(kThreads == kSelectThreads, "the selects of kernels/topk_select.cuh assume 256 threads");

struct Fp8Args {
  const uint8_t* q;       // [T, H, 128] e4m3
  const float* q_scale;   // [T, H]
  const uint8_t* k;       // [L, 128] e4m3
  const float* k_scale;   // [L]
  const float* weights;   // [T, H]
  const int32_t* key_end;
  int64_t T, L, H;
  int64_t query_offset;
  int topk;
  int cap;
  float abs_scale;
  bool negate_q;  // scale < 0: ReLU(scale * x) = |scale| * ReLU(-x); e4m3 negates by its sign bit
  bool final_compact;  // compact every buffer to <= topk + kTile entries at the end (experiment)
  float* cand_scores;   // [T, cap]
  int32_t* cand_idx;    // [T, cap]
  int32_t* cand_count;  // [T]
};

#if INDEXER_TOPK_HAS_WGMMA
// S[64 keys x 128 (2 queries x 64 heads)] over D = 128 (4 K-steps of 32 e4m3), issued and committed.
__device__ __forceinline__ void WgIssueFp8(float (&acc)[64], uint32_t key_base, uint32_t q_base) {
  FenceRegs(acc);
  WgmmaFence();
#pragma unroll
  for (int ks = 0; ks < Fp8MainSmemPlan::kD / 32; ++ks) {
    WgmmaM64N128K32E4M3(acc, WgDesc(key_base + ks * 32), WgDesc(q_base + ks * 32), ks != 0);
  }
  WgmmaCommit();
  FenceRegs(acc);
}
#endif

}  // namespace
}  // namespace indexer_topk
}  // namespace indexcache
