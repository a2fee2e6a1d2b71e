// Top-k probes of a forward: how much the layers' key selections agree (the paper's cross-layer
// similarity) and how much of each layer's own dense attention its selection keeps.
//
// Both look at a sample of queries only, so nothing of size [T, T] (or [T, k] for every layer at
// once) has to exist: the forward keeps its traces on the backend, in passes of as many layers
// as fit in half the free device memory, and only the sampled rows come to the host.
//
//  * Pair overlap of layers i, j: |topk_i(t) ∩ topk_j(t)| / k, averaged over sampled queries t
//    with more than k valid keys (t + 1 > k; below that every layer takes every key).
//  * Mass recall of layer l at query t: the head-averaged dense attention of layer l (softmax over
//    all causal keys s <= t of scale * q_h(t) . kv(s)) summed over the keys the layer actually
//    attends (its own top-k, or the reused one under a Shared layer). Streams over keys with one
//    [heads, t + 1] score row per query.
#pragma once

#include <cstdint>
#include <vector>

#include "core/status.h"
#include "core/tensor.h"
#include "model/backend.h"
#include "model/dsa_model.h"
#include "model/pattern.h"

namespace indexcache {

// The most queries a probe may sample per window.
constexpr int64_t kMaxProbeQueries = int64_t{1} << 20;

// Up to max_queries positions evenly spread over [min(k, T - 1), T), ascending and distinct;
// max_queries == 0 takes all of them. Positions below k have every key in their top-k.
std::vector<int64_t> SampleQueries(int64_t T, int64_t k, int64_t max_queries);

struct LayerProbe {
  Tensor topk_rows;          // host int32 [queries, k]: the row of each sampled query
  double mass_recall = 0.0;  // mean over sampled queries (when asked)
};

// Runs `tokens` under `pattern` and probes every layer at `queries` (ascending positions).
// With mass_recall the attention inputs are traced too (more memory per pass).
StatusOr<std::vector<LayerProbe>> ProbeLayers(const DsaModel& model, const std::vector<int32_t>& tokens,
                                              const IndexPattern& pattern, const std::vector<int64_t>& queries,
                                              bool mass_recall);

// Head-averaged share of dense attention mass that falls on `used` (k entries, -1 = none,
// duplicates counted once) for the query at `position`. q_row: backend [heads, D]; kv: backend
// [>= position + 1, D]. The dense scores are one [heads, position + 1] f32 row on the backend.
double AttentionMassOnKeys(Backend& be, const Tensor& q_row, const Tensor& kv, float scale, int64_t position,
                           const int32_t* used, int64_t k);

// Accumulates the mean pairwise overlap over windows.
class TopkOverlap {
 public:
  explicit TopkOverlap(int num_layers);
  // probes: one per layer, rows at `positions`; k = the rows' width. Queries with
  // position + 1 <= k are skipped.
  void Add(const std::vector<LayerProbe>& probes, const std::vector<int64_t>& positions);
  int64_t queries() const { return queries_; }
  // [N][N] mean overlap; NaN everywhere when no query counted.
  std::vector<std::vector<double>> Matrix() const;

 private:
  int n_;
  int64_t queries_ = 0;
  std::vector<double> sum_;  // n_ * n_
};

}  // namespace indexcache
