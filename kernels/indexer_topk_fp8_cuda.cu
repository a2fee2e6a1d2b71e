// Path A of the CUDA indexer top-k with FP8 inputs (D = 128, 1..64 heads): the e4m3 wgmma main
// kernel, then path A's finalize kernel (indexer_topk_main_cuda.cu). The semantics and the FP8
// factorisation are described in kernels/indexer_topk_cuda.h ("FP8 path"); this kernel is the bf16
// wgmma variant of indexer_topk_main_cuda.cu with 8-bit operands, and the comments here are about
// what differs:
//  - a query row (head) and a key row are 128 e4m3 = 128 bytes: exactly one 128-byte swizzle row,
//    so a query is one K-block [64 heads x 128 B] and a tile of keys one block [kTile x 128 B];
//    a wgmma K-step of 32 e4m3 is 32 bytes, the same descriptor arithmetic as bf16's k16 step;
//  - wgmma m64n128k32 e4m3 x e4m3 -> fp32 (both operands K-major, the only layout 8-bit wgmma has);
//    the accumulator layout is the bf16 one (row = key 16 w + g (+8), column = head 8 j + 2 t4 + e);
//  - the head weights in shared memory carry the query scales (w[t, h] * qs[t, h] * |scale|), and
//    the head sum of a key is multiplied by its scale ks[s] (both positive, see the header);
//  - a stage holds 256 keys (32 KiB, the bf16 stage's bytes), so each warpgroup runs 8 steps per
//    tile and the per-tile barrier and pipeline drain are paid half as often; the candidate
//    buffers are twice as long (Fp8CapacityFor), and the compaction scratch has its own region;
//  - the head sum runs in four FMA chains per key (the bf16 kernel's single chain keeps the bits of
//    its other paths; here the warps stalled on its latency), so the FP8 scores do not reproduce
//    a bf16 summation order;
//  - no function call and no trap inside the wgmma pipeline (ptxas would serialise every wgmma):
//    a candidate-buffer overflow is noted in shared memory and trapped after the tile.
// The candidate buffers, the threshold and the compaction (CompactCandidatesBin) are unchanged, so
// the output semantics are path A's.
//
// The first such kernel (v0: two math warpgroups of two accumulators) was replaced on 2026-12-01
// by IndexerTopkFp8KernelT (indexer_topk_fp8_kernel.cuh), whose default instance, v7, has four math
// warpgroups of one accumulator each (4 warps per scheduler instead of 2: the epilogue was
// latency-bound), each warpgroup two queries (wgmma m64n128k32), the next step's wgmma issued as
// soon as the head sums have read the accumulator, a trimmed epilogue (LDS.128 weight rows,
// per-tile thresholds, precomputed descriptors), one barrier per tile, and the two 256-thread
// halves compacting a query each at once: 1.13 / 1.23 / 1.28x v0's whole call at 8K / 32K / 128K
// keys with v0's scores bit for bit (docs/benchmarks.md, "FP8 indexer epilogue").
#include <cmath>
#include <cstddef>
#include <cstdint>

#include "core/cuda_check.h"
// The kernels live in indexer_topk_fp8_{common,kernel}.cuh (included below, after these macros);
// this file holds the variant table and the dispatch.
// No function call may sit in these kernels (see kernels/topk_select.cuh): an overflow traps.
#define TOPK_SELECT_OVERFLOW_TRAP_ONLY 1
// The four-warpgroup kernels run 512 threads; threads 0..255 compact, over named barrier 5.
#define TOPK_SELECT_SYNC() asm volatile("bar.sync 5, 256;" ::: "memory")
#include "kernels/indexer_topk_cuda_internal.h"
#include "kernels/indexer_topk_tiles.cuh"
#include "kernels/topk_select.cuh"
#include "kernels/indexer_topk_fp8_common.cuh"
#include "kernels/indexer_topk_fp8_kernel.cuh"

namespace indexcache {
namespace indexer_topk {
namespace {

IndexerTopkFp8Experiment g_fp8_experiment;  // see SetIndexerTopkFp8Experiment

struct Fp8KernelVariant {
  const char* name;
  void (*kernel)(const Fp8Args);
  int threads;
  bool needs_int32_candidates;  // T * cap < 2^31 (the trimmed epilogue's 32-bit candidate offsets)
  int sum_order;                // 0: v0's head-sum bits (both kept); other values: same function, other bits
};
// The variants kept after the 2026-12-01 runs (docs/benchmarks.md, "FP8 indexer epilogue", which
// numbers them v0..v9; the others measured slower and were removed): the untrimmed 4-warpgroup one
// (the fallback where candidate offsets exceed 32 bits) and the default.
const Fp8KernelVariant kFp8Variants[] = {
    {"v3: 4 WG x 1 acc N128", IndexerTopkFp8KernelT<4, 2, 1, false>, 512, false, 0},
    {"v7: 4 WG x 1 acc N128, trimmed, pair compaction, split epilogue, one barrier",
     IndexerTopkFp8KernelT<4, 2, 1, true, true, true, true>, 512, true, 0},
};
__host__ int Fp8VariantSumOrder(int v) { return kFp8Variants[v].sum_order; }
constexpr int kFp8VariantCount = static_cast<int>(sizeof(kFp8Variants) / sizeof(kFp8Variants[0]));
constexpr int kFp8Fallback = 0;        // v3
constexpr int kFp8DefaultVariant = 1;  // v7

}  // namespace

void RunQueryBlocksFp8(const IndexerTopkCudaParams& p, const Workspace& ws) {
  Fp8Args a;
  a.q = p.q_fp8;
  a.q_scale = p.q_scale;
  a.k = p.k_fp8;
  a.k_scale = p.k_scale;
  a.weights = p.weights;
  a.key_end = p.key_end;
  a.T = p.T;
  a.L = p.L;
  a.H = p.H;
  a.query_offset = p.query_offset;
  a.topk = static_cast<int>(p.topk);
  a.cap = static_cast<int>(QueryBlockCapacity(p));
  a.abs_scale = std::fabs(p.scale);
  a.negate_q = p.scale < 0.f;
  a.cand_scores = ws.scores;
  a.cand_idx = ws.idx;
  a.cand_count = ws.count;
  if (!Fp8MainSmemPlan::Fits(a.cap)) Fail("FP8 path: candidate buffer larger than the compaction scratch");
  a.final_compact = false;
  int64_t final_max = -1;  // the most entries a buffer holds after the main kernel (-1: cap)
  if (p.L == 0) {
    CUDA_CHECK(cudaMemsetAsync(ws.count, 0, static_cast<size_t>(p.T) * sizeof(int32_t), p.stream));
  } else {
    int v = g_fp8_experiment.fp8_kernel >= 0 && g_fp8_experiment.fp8_kernel < kFp8VariantCount
                ? g_fp8_experiment.fp8_kernel
                : kFp8DefaultVariant;
    if (kFp8Variants[v].needs_int32_candidates && p.T * static_cast<int64_t>(a.cap) >= (int64_t{1} << 31)) {
      v = kFp8Fallback;
    }
    a.final_compact = g_fp8_experiment.final_compact;
    final_max = a.final_compact ? a.topk + Fp8MainSmemPlan::kTile : -1;
    const Fp8KernelVariant& kv = kFp8Variants[v];
    CUDA_CHECK(cudaFuncSetAttribute(kv.kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, Fp8MainSmemPlan::kBytes));
    const unsigned grid = static_cast<unsigned>((p.T + kWarps - 1) / kWarps);
    kv.kernel<<<grid, kv.threads, Fp8MainSmemPlan::kBytes, p.stream>>>(a);
    CUDA_CHECK(cudaGetLastError());
  }
  if (!g_fp8_experiment.skip_finalize) FinalizeQueryBlocks(p, ws, final_max);
}

}  // namespace indexer_topk

void SetIndexerTopkFp8Experiment(const IndexerTopkFp8Experiment& e) { indexer_topk::g_fp8_experiment = e; }
int IndexerTopkFp8KernelCount() { return indexer_topk::kFp8VariantCount; }
const char* IndexerTopkFp8KernelName(int variant) {
  return variant >= 0 && variant < indexer_topk::kFp8VariantCount ? indexer_topk::kFp8Variants[variant].name : "?";
}
int IndexerTopkFp8DefaultKernel() { return indexer_topk::kFp8DefaultVariant; }
int IndexerTopkFp8KernelSumOrder(int variant) { return indexer_topk::Fp8VariantSumOrder(variant); }

}  // namespace indexcache
