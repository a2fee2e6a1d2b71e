// Sane upper bounds for every size a user controls (config.json fields, command-line flags,
// training config fields), checked where the value enters the program.
//
// Why bounds and not just overflow checks: a size can be representable and still absurd (a
// 2^40-layer model loops for hours before failing; a 2^62 top-k makes later products wrap). Each
// bound is far above any released DSA model (DeepSeek-V3.2: 61 layers, 128 heads, hidden 7168,
// vocab 129280, 256 experts, top-k 2048, 160K context; GLM-5 is of the same order), so a real
// checkpoint never hits one, while every product of a few bounded sizes stays far from 2^63.
#pragma once

#include <cstdint>

namespace indexcache {

inline constexpr int64_t kMaxLayers = 4096;          // num_hidden_layers, pattern length
inline constexpr int64_t kMaxHeads = 4096;           // attention heads, indexer heads
inline constexpr int64_t kMaxDim = int64_t{1} << 20;  // hidden, intermediate, ranks, head dims
inline constexpr int64_t kMaxVocab = int64_t{1} << 24;
inline constexpr int64_t kMaxTopk = int64_t{1} << 20;     // index_topk
inline constexpr int64_t kMaxExperts = int64_t{1} << 16;  // routed / shared experts, groups
inline constexpr int64_t kMaxSeqLen = int64_t{1} << 24;   // positions, --seq-len, --max-new, seq_len
inline constexpr int64_t kMaxBatch = int64_t{1} << 20;    // sequences per batch / step
inline constexpr int64_t kMaxSteps = int64_t{1} << 40;    // optimizer steps
// A single tensor larger than this is refused before allocation (1 PiB): the product of its
// dimensions is then certainly a mistake, and refusing early keeps every byte count far from
// overflowing int64.
inline constexpr int64_t kMaxTensorBytes = int64_t{1} << 50;

}  // namespace indexcache
