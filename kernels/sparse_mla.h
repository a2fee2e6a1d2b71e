// Sparse MLA attention in the absorbed (MQA) form.
//
// Every head of query t attends over one shared latent per key (d_qk = kv_lora_rank + rope dims),
// restricted to the keys in indices[t, :] (-1 entries are skipped); values are the first d_v dims
// of the same latents:
//   out[t, h] = sum_j softmax_j(scale * q[t, h] . kv[i_j]) * kv[i_j, 0:d_v]
//   lse[t, h] = log sum_j exp(scale * q[t, h] . kv[i_j])     (natural log)
// A query with no valid index gets out = 0 and lse = +inf (so exp(s - lse) = 0 downstream).
// NaN scores propagate (out and lse NaN); they are never taken for "no valid key".
// Duplicate indices count once each, as a gather-based implementation would.
#pragma once

#include <cstdint>

namespace indexcache {

struct SparseMlaParams {
  const float* q = nullptr;          // [T, H, d_qk] absorbed queries
  const float* kv = nullptr;         // [L, d_qk]    latents (values: first d_v dims)
  const int32_t* indices = nullptr;  // [T, topk]    key indices in [0, L), or -1
  int64_t T = 0, H = 0, d_qk = 0, d_v = 0, L = 0, topk = 0;
  float scale = 1.0f;
  float* out = nullptr;              // [T, H, d_v]
  float* lse = nullptr;              // [T, H] optional
};

void SparseMlaCpu(const SparseMlaParams& p);

}  // namespace indexcache
