#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>
#include <vector>

#include "kernels/indexer_topk.h"

namespace indexcache {

namespace {
int64_t KeyEnd(const IndexerTopkParams& p, int64_t t) {
  const int64_t end = p.key_end ? p.key_end[t] : p.query_offset + t + 1;
  return std::clamp<int64_t>(end, 0, p.L);
}
}  // namespace

void IndexerScoresRowCpu(const IndexerTopkParams& p, int64_t t, float* row) {
  const int64_t end = KeyEnd(p, t);
  const float* qt = p.q + t * p.H * p.D;
  const float* wt = p.weights + t * p.H;
  for (int64_t s = 0; s < p.L; ++s) {
    if (s >= end) {
      row[s] = -std::numeric_limits<float>::infinity();
      continue;
    }
    const float* ks = p.k + s * p.D;
    float score = 0.0f;
    for (int64_t h = 0; h < p.H; ++h) {
      const float* qh = qt + h * p.D;
      float dot = 0.0f;
      for (int64_t d = 0; d < p.D; ++d) dot += qh[d] * ks[d];
      score += wt[h] * std::max(dot * p.scale, 0.0f);
    }
    row[s] = score;
  }
}

void IndexerTopkCpu(const IndexerTopkParams& p) {
#pragma omp parallel
  {
    std::vector<float> row(p.L);
    std::vector<int32_t> order(p.L);
#pragma omp for schedule(dynamic, 4)
    for (int64_t t = 0; t < p.T; ++t) {
      IndexerScoresRowCpu(p, t, row.data());
      const int64_t valid = KeyEnd(p, t);
      const int64_t k = std::min<int64_t>(p.topk, valid);
      order.resize(valid);
      std::iota(order.begin(), order.end(), 0);
      // Higher score first; equal scores: lower key index first. NaN never wins.
      auto better = [&](int32_t a, int32_t b) {
        const float sa = row[a], sb = row[b];
        if (sa != sb) return sa > sb || std::isnan(sb);
        return a < b;
      };
      std::partial_sort(order.begin(), order.begin() + k, order.end(), better);
      int32_t* out = p.out_indices + t * p.topk;
      for (int64_t j = 0; j < p.topk; ++j) out[j] = j < k ? order[j] : -1;
      if (p.out_scores) {
        float* sc = p.out_scores + t * p.topk;
        for (int64_t j = 0; j < p.topk; ++j) sc[j] = j < k ? row[order[j]] : -std::numeric_limits<float>::infinity();
      }
    }
  }
}

}  // namespace indexcache
