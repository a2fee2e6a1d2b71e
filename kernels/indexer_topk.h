// The lightning indexer's scores and top-k selection.
//
//   I[t, s] = sum_h weights[t, h] * ReLU(scale * q[t, h, :] . k[s, :])   for keys s < key_end(t)
//
// `weights` already carries the n_heads^-0.5 factor; `scale` is index_head_dim^-0.5.
// Selection is exact: the k highest scores, ties broken toward the LOWER key index, output in
// that order (best first); rows with fewer valid keys than k pad with index -1 and score -inf.
// The CPU reference below is the definition every backend is tested against.
#pragma once

#include <cstdint>

namespace indexcache {

struct IndexerTopkParams {
  const float* q = nullptr;            // [T, H, D] indexer queries, rope applied
  const float* k = nullptr;            // [L, D]    indexer keys, rope applied
  const float* weights = nullptr;      // [T, H]    per-head weights (n_heads^-0.5 folded in)
  const int32_t* key_end = nullptr;    // [T] valid keys are [0, key_end[t]); nullptr = causal
  int64_t T = 0, L = 0, H = 0, D = 0;
  int64_t topk = 0;
  int64_t query_offset = 0;            // causal: query t sees keys [0, query_offset + t]
  float scale = 1.0f;
  int32_t* out_indices = nullptr;      // [T, topk] selected keys, best first, -1 padding
  float* out_scores = nullptr;         // [T, topk] optional: their scores, -inf padding
};

void IndexerTopkCpu(const IndexerTopkParams& p);

// The full score row of query t over keys [0, L) (invalid keys get -inf); for tests and the trainer.
void IndexerScoresRowCpu(const IndexerTopkParams& p, int64_t t, float* row);

}  // namespace indexcache
