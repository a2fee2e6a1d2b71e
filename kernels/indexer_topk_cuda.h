// Lightning-indexer scores fused with exact top-k, CUDA backend (mirrors kernels/indexer_topk.h;
// IndexerTopkCpu is the reference and defines the semantics).
//
//   I[t, s] = sum_h weights[t, h] * ReLU(scale * q[t, h, :] . k[s, :])   for keys s < key_end(t)
//
// Output per query: the topk best keys under (score descending, key index ascending), best first;
// rows with fewer valid keys than topk pad with index -1 and score -inf.
//
// Algorithm (no [T, L] score matrix is ever written to global memory). Two paths, chosen inside
// IndexerTopkCuda (IndexerTopkCudaParams::path can force one, for tests and benchmarks):
//
// A. Query blocks (many queries: prefill):
//  1. Main kernel: one CTA of 8 warps owns 8 consecutive queries, one query per warp. Each warp
//     keeps its query's q[t] (all heads x D, bf16) in registers as mma.sync B fragments for the whole
//     kernel. The CTA streams the keys in tiles of 128 through a 3-stage cp.async shared-memory
//     pipeline (rows padded so ldmatrix is conflict-free); every warp computes the 128 x H logits of
//     its query with mma.sync m16n8k16 (bf16 in, fp32 accumulate), applies ReLU and the per-head
//     weights in fp32 and reduces over heads with two quad shuffles. Scores never leave registers
//     except as candidates: a key whose score is strictly above the query's running threshold is
//     appended (score, index) to that query's candidate buffer in the workspace
//     (cap = max(2 * topk, 1024) + 128 entries per query). When a buffer could overflow on the next
//     tile, the CTA compacts the fullest buffers in place to exactly their topk best with a
//     block-wide radix select (8-bit digits starting below the common prefix of the candidates'
//     order-preserving keys; exact ties at the k-th value are resolved by a second radix select on
//     the key index), and the threshold becomes the k-th best score. Because keys are streamed in
//     increasing index order, a later key that only ties the threshold can never beat the kept ones
//     (it has a larger index), so the strict ">" filter is exact.
//     D = 128 with 33..64 heads (the DeepSeek shape) runs a wgmma variant instead: the 8 queries
//     sit in shared memory (128-byte swizzle), keys stream through 2 swizzled stages, and each
//     warpgroup computes S[64 keys x (2 queries x 64 heads)] with wgmma m64n128k16, two steps in
//     flight; its accumulator layout is the mma.sync one, so ReLU / weights / head-sum are the same
//     code (the split kernel's wgmma variant gives the same bits). Its compaction stops the radix
//     select at the first bin edge that keeps <= topk + 128 entries and uses that edge as the
//     threshold (a superset of the topk best, so the finalize result is unchanged).
//  2. Finalize kernel (one CTA per query): compacts the buffer to its exact min(topk, n) best,
//     bitonic-sorts them by (score desc, index asc) in shared memory and writes indices and scores.
// Typical cost of the selection: about k * (1 + ln(L / k)) candidates per query (random order) and a
// handful of compactions of ~2k entries each; the q.k products dominate.
//
// B. Split keys (few queries: decode, T <= 64): path A would give a one-token step a single SM
// (ceil(T / 8) CTAs). Instead the keys are cut into C chunks of whole 128-key tiles
// (C ~ 128 / T CTAs' worth, at least 256 keys per chunk) and
//  1. Split kernel, one CTA per (query, chunk): the CTA's 8 warps all hold the same q[t] and each
//     scores its own 16-key slice of every tile of the chunk (same mma/ReLU/weights code as A).
//     Candidates above the chunk's running threshold go to the (query, chunk) buffer (cap =
//     min(max(2 * topk, 1024) + 128, chunk keys)); it is compacted exactly as in A, so the buffer
//     always holds a superset of the chunk's exact top-k, and hence all of the buffers together
//     hold the query's exact top-k. At the end the CTA adds its buffer's entries to a per-query
//     histogram of the top 16 bits of the order-preserving score key (plus a 256-bin histogram of
//     the top 8 bits).
//  2. Filter kernel, one CTA per (query, chunk): from the histograms, the 16-bit bin B that holds
//     the query's r-th best buffered score (r = min(topk, entries buffered)); every entry in a bin
//     below B is certainly not selected and is dropped in place. Survivors: the < r entries above
//     B plus those in B (bins are 1/128 of a binade wide, so usually a few hundred extra).
//  3. Merge kernel, one CTA per query: gathers the survivors into shared memory (up to 16384; more,
//     e.g. with massive exact ties, are selected straight from the workspace instead, slower but
//     exact), selects the exact r best with the same radix select + index tie-break as A, sorts
//     them (score desc, index asc) and writes indices and scores, padding the rest.
// Split-path workspace: T * C * cap entries + T * (65536 + 256) histogram words, independent of L
// once C * cap saturates (C <= 128 / T).
//
// Decode batches (key_begin): each query's keys start at its own row of k; the split-keys path
// offsets the key pointer per query and clamps tile rows to the query's own key_end, so a batch of
// requests in one pooled key buffer is one launch that gives, query by query, the same bits as a
// T = 1 call on that request's own keys.
//
// FP8 path (IndexerTopkCudaParams::q_fp8 set; D = 128, 1 <= H <= 64): q and k in e4m3 with per-row
// scales (qs[t, h], ks[s]). Since the scales are positive, ReLU(scale * qs q8 . ks k8) =
// qs * ks * ReLU(scale * q8 . k8): the kernel (indexer_topk_fp8_cuda.cu) runs the wgmma variant of
// path A with e4m3 operands (m64n128k32, fp32 accumulate; rows of 128 bytes, 128-byte swizzle),
// folds qs into the head weights and multiplies the head sum by ks[s]:
//   I[t, s] = ks[s] * sum_h (weights[t, h] * qs[t, h] * |scale|) * ReLU(+-q8[t, h] . k8[s])
// The candidate buffers, compaction and finalize are path A's, so the output semantics are the
// same. The reference is IndexerTopkCpu on the dequantised inputs; the scores agree to the fp8
// tensor cores' accumulation precision (about 2^-14 of the dot products' magnitude, looser than
// bf16's), so sets agree except where the k-th gap is within that. Every T runs query blocks
// (decode with few queries is not split yet: one CTA per 8 queries); path kSplitKeys is refused.
// q_fp8 / k_fp8 16-byte aligned. Measured (docs/benchmarks.md, H200, 2048 queries, H = 64, k 2048):
// 1.35 / 1.56 / 1.68x the bf16 path at 8K / 32K / 128K keys (2.05x the cuBLASLt FP8 GEMM floor at
// 128K), selections 95-99 % equal to bf16's.
//
// NaN scores (only from non-finite inputs) are never selected. Supported: D in {32, 64, 128},
// 1 <= H <= 64, 1 <= topk <= 2048, L < 2^31; q, k 16-byte aligned.
#pragma once

#include <cstddef>
#include <cstdint>

#include <cuda_bf16.h>
#include <cuda_runtime_api.h>

#include "core/status.h"

namespace indexcache {

// Which algorithm IndexerTopkCuda runs (see above). kAuto picks split keys for T <= 64 when the
// keys span at least two chunks; the others force a path (tests and benchmarks).
enum class IndexerTopkCudaPath { kAuto, kQueryBlocks, kSplitKeys };

struct IndexerTopkCudaParams {
  const __nv_bfloat16* q = nullptr;   // [T, H, D] device, indexer queries (rope applied)
  const __nv_bfloat16* k = nullptr;   // [L, D]    device, indexer keys (rope applied)
  const float* weights = nullptr;     // [T, H]    device, per-head weights (n_heads^-0.5 folded in)
  const int32_t* key_end = nullptr;   // [T]       device, valid keys [0, key_end[t]); nullptr = causal
  // [T] device, optional (needs key_end; split-keys path only): query t's keys are the rows
  // [key_begin[t], key_begin[t] + key_end[t]) of k, and its indices count from key_begin[t]. One call
  // then serves a decode batch whose requests keep their keys at different rows of one pooled
  // buffer (L = the longest request's key count). Every row read lies in a request's own range.
  const int32_t* key_begin = nullptr;
  int64_t T = 0, L = 0, H = 0, D = 0;
  int64_t topk = 0;
  int64_t query_offset = 0;           // causal: query t sees keys [0, query_offset + t]
  float scale = 1.0f;                 // inside the ReLU (index_head_dim^-0.5)
  int32_t* out_indices = nullptr;     // [T, topk] device, best first, -1 padding
  float* out_scores = nullptr;        // [T, topk] device, optional: their scores, -inf padding
  void* workspace = nullptr;          // device scratch of IndexerTopkCudaWorkspaceBytes(*this) bytes
  size_t workspace_bytes = 0;         // size of `workspace` (checked)
  cudaStream_t stream = nullptr;
  IndexerTopkCudaPath path = IndexerTopkCudaPath::kAuto;
  // FP8 inputs (see "FP8 path" above). When q_fp8 is set the call runs the FP8 path and q / k are
  // not read: q_fp8 [T, H, D] e4m3 with q_scale [T, H] (one positive fp32 scale per (token, head)),
  // k_fp8 [L, D] e4m3 with k_scale [L] (one positive scale per key), as kernels/fp8_quant_cuda.h
  // produces them; the scores are those of the dequantised q = q_fp8 * q_scale, k = k_fp8 * k_scale.
  const uint8_t* q_fp8 = nullptr;
  const float* q_scale = nullptr;
  const uint8_t* k_fp8 = nullptr;
  const float* k_scale = nullptr;
};

// Scratch the call needs for the path these params select: query blocks, per query a candidate
// buffer of max(2 * topk, 1024) + 128 (score, index) pairs (FP8 inputs: max(4 * topk, 1024) + 256)
// plus a count, i.e. O(T * topk) entries, independent of L; split keys, per (query, chunk) a
// buffer of at most max(2 * topk, 1024) + 128 pairs plus per query the 65792-word histogram,
// i.e. O(T * C * topk + T * 65792) with C * T <= 128.
size_t IndexerTopkCudaWorkspaceBytes(const IndexerTopkCudaParams& p);

// Asynchronous on p.stream. Unsupported shapes or a short workspace abort with a message.
void IndexerTopkCuda(const IndexerTopkCudaParams& p);

// Experiments only (indexer_topk_fp8_cuda_bench, indexer_topk_fp8_cuda_test); process-wide, not
// thread-safe. The defaults are what IndexerTopkCuda runs. fp8_kernel picks the FP8 path's main
// kernel (IndexerTopkFp8KernelName lists them; -1: the default); skip_finalize runs the FP8 main
// kernel alone (no output is written: its time only).
struct IndexerTopkFp8Experiment {
  int fp8_kernel = -1;
  bool skip_finalize = false;
  // Variants 1..: the main kernel compacts every candidate buffer to <= topk + 256 entries before
  // it ends, and the finalize kernel runs with that smaller scratch.
  bool final_compact = false;
};
void SetIndexerTopkFp8Experiment(const IndexerTopkFp8Experiment& e);
// Number of FP8 main-kernel variants, the name of each, and the default's index.
int IndexerTopkFp8KernelCount();
const char* IndexerTopkFp8KernelName(int variant);
int IndexerTopkFp8DefaultKernel();
// Variants with equal sum orders give the same scores bit for bit (hence the same output).
int IndexerTopkFp8KernelSumOrder(int variant);

// The model-level sizes IndexerTopkCuda supports, checked when a model loads (as FlashMLA checks
// before dispatch) so that an unsupported checkpoint is one error line, not an abort mid-forward.
// Errors name each size by the caller's name for it (config.json's field names by default).
struct IndexerTopkCudaSizes {
  int64_t heads = 0, head_dim = 0, topk = 0;
  const char* heads_name = "index_n_heads";
  const char* head_dim_name = "index_head_dim";
  const char* topk_name = "index_topk";
};
indexcache::Status IndexerTopkCudaSupports(const IndexerTopkCudaSizes& sizes);

}  // namespace indexcache
