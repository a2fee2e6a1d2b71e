// Fused lightning-indexer scores + exact top-k on the GPU: the thin host dispatcher. The algorithm
// is described in kernels/indexer_topk_cuda.h. This file validates the parameters, carves the
// workspace and picks a path:
//   A. query blocks: indexer_topk_main_cuda.cu  (main kernel, its wgmma variant, finalize);
//   B. split keys:   indexer_topk_split_cuda.cu (split, filter and merge kernels);
//   FP8 inputs:      indexer_topk_fp8_cuda.cu   (e4m3 wgmma main kernel, then A's finalize).
// The selection library both use is kernels/topk_select.cuh, their shared score-tile code
// kernels/indexer_topk_tiles.cuh, the constants and plans kernels/indexer_topk_cuda_internal.h.
#include "kernels/indexer_topk_cuda.h"

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>

#include "kernels/indexer_topk_cuda_internal.h"

namespace indexcache {
namespace indexer_topk {

[[noreturn]] void Fail(const char* what) {
  std::fprintf(stderr, "IndexerTopkCuda: %s\n", what);
  std::fflush(stderr);
  std::abort();
}

namespace {

size_t AlignUp(size_t x) { return (x + 255) / 256 * 256; }

bool UseSplit(const IndexerTopkCudaParams& p) {
  if (p.q_fp8 != nullptr) return false;     // the FP8 path is query blocks only
  if (p.key_begin != nullptr) return true;  // per-query key ranges: the split path only
  switch (p.path) {
    case IndexerTopkCudaPath::kQueryBlocks:
      return false;
    case IndexerTopkCudaPath::kSplitKeys:
      return true;
    default:
      return p.T <= kSplitMaxT && PlanSplit(p).nchunks >= 2;
  }
}

Workspace CarveWorkspace(const IndexerTopkCudaParams& p) {
  const bool split = UseSplit(p);
  const SplitPlan plan = PlanSplit(p);
  const size_t T = static_cast<size_t>(p.T);
  const size_t entries = split ? T * static_cast<size_t>(plan.nchunks * plan.seg_cap)
                               : T * static_cast<size_t>(QueryBlockCapacity(p));
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

bool Aligned16(const void* p) { return reinterpret_cast<uintptr_t>(p) % 16 == 0; }

}  // namespace
}  // namespace indexer_topk


using indexer_topk::CarveWorkspace;
using indexer_topk::Fail;
using indexer_topk::kMaxHeads;
using indexer_topk::kMaxTopk;

size_t IndexerTopkCudaWorkspaceBytes(const IndexerTopkCudaParams& p) {
  IndexerTopkCudaParams copy = p;
  copy.workspace = nullptr;
  return CarveWorkspace(copy).bytes;
}

// Validation first: a path runs only with sizes it supports and a large enough workspace.
void IndexerTopkCuda(const IndexerTopkCudaParams& p) {
  if (p.T < 0 || p.L < 0 || p.topk < 0) Fail("negative size");
  if (p.T == 0 || p.topk == 0) return;
  if (p.topk > kMaxTopk) Fail("topk > 2048 is not supported");
  if (p.H < 1 || p.H > kMaxHeads) Fail("H must be in [1, 64]");
  if (p.D != 32 && p.D != 64 && p.D != 128) Fail("D must be 32, 64 or 128");
  if (p.L >= (int64_t{1} << 31)) Fail("L must be < 2^31");
  const bool fp8 = p.q_fp8 != nullptr;
  if (fp8) {
    if (p.D != 128) Fail("the FP8 path needs D = 128");
    if (p.path == IndexerTopkCudaPath::kSplitKeys) Fail("the FP8 path has no split-keys variant");
    if (p.q_scale == nullptr || p.weights == nullptr || p.out_indices == nullptr ||
        (p.L > 0 && (p.k_fp8 == nullptr || p.k_scale == nullptr))) {
      Fail("null FP8 input or output pointer");
    }
    if (!indexer_topk::Aligned16(p.q_fp8) || !indexer_topk::Aligned16(p.k_fp8)) {
      Fail("q_fp8 and k_fp8 must be 16-byte aligned");
    }
  } else {
    if (p.q == nullptr || p.weights == nullptr || p.out_indices == nullptr || (p.L > 0 && p.k == nullptr)) {
      Fail("null input or output pointer");
    }
    if (!indexer_topk::Aligned16(p.q) || !indexer_topk::Aligned16(p.k)) Fail("q and k must be 16-byte aligned");
  }
  if (p.key_begin != nullptr && (fp8 || p.key_end == nullptr || p.path == IndexerTopkCudaPath::kQueryBlocks)) {
    Fail("key_begin needs key_end and the split-keys path (not the FP8 path)");
  }
  const indexer_topk::Workspace ws = CarveWorkspace(p);
  if (p.workspace == nullptr || p.workspace_bytes < ws.bytes) Fail("workspace missing or too small");
  constexpr int64_t kMaxGrid = 0x7fffffff;
  if (p.T > kMaxGrid) Fail("T too large");
  if (fp8) {
    indexer_topk::RunQueryBlocksFp8(p, ws);
  } else if (indexer_topk::UseSplit(p)) {
    indexer_topk::RunSplitKeys(p, ws);
  } else {
    indexer_topk::RunQueryBlocks(p, ws);
  }
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
