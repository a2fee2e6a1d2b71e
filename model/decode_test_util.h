// Test helpers shared by the batched-decode tests (CPU and CUDA): deterministic prompts and the
// reference a batched step is compared with, one request decoded alone through KvCache.
#pragma once

#include <cstdint>
#include <vector>

#include "model/dsa_model.h"

namespace indexcache {

// Deterministic token ids of request `r`, n of them, in [0, vocab).
std::vector<int32_t> DecodeTestTokens(int r, int64_t n, int64_t vocab);

// One request decoded alone (the per-request cache path): `prompt`, then `steps` one token at a
// time; the logits of each decode step. Failures are test failures.
std::vector<std::vector<float>> DecodeAlone(const DsaModel& model, const IndexPattern* pattern,
                                            const std::vector<int32_t>& prompt, const std::vector<int32_t>& steps);

}  // namespace indexcache
