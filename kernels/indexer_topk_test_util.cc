#include "kernels/indexer_topk_test_util.h"

#include <algorithm>
#include <cmath>
#include <functional>
#include <vector>

#include "gtest/gtest.h"

namespace indexcache {

TopkCheckResult CheckTopkRows(const TopkCheck& c) {
  TopkCheckResult result;
  for (int64_t t = 0; t < c.T && result.failed_rows < c.max_failed_rows; ++t) {
    const float* row = c.ref_rows + t * c.L;
    std::vector<float> valid;
    float row_max = 0.f;
    for (int64_t s = 0; s < c.L; ++s) {
      if (std::isfinite(row[s])) {
        valid.push_back(row[s]);
        row_max = std::max(row_max, std::fabs(row[s]));
      }
    }
    const int64_t nvalid = static_cast<int64_t>(valid.size());
    const int64_t kk = std::min(c.topk, nvalid);
    std::sort(valid.begin(), valid.end(), std::greater<float>());
    auto scale_of = [&](float v) { return std::max(std::fabs(v), c.floor * row_max); };
    auto tol_of = [&](float v) { return c.rel_tol * scale_of(v); };
    const int32_t* gi = c.got_idx + t * c.topk;
    const float* gs = c.got_scores + t * c.topk;
    const int32_t* ri = c.ref_idx + t * c.topk;
    std::set<int32_t> seen;
    bool row_ok = true;
    auto fail = [&](const std::string& what, int64_t j) {
      ADD_FAILURE() << c.name << " t=" << t << " j=" << j << ": " << what << " (got idx " << gi[j] << " score "
                    << gs[j] << ", ref idx " << ri[j] << " score " << c.ref_scores[t * c.topk + j] << ")";
      row_ok = false;
    };
    for (int64_t j = 0; j < c.topk && row_ok; ++j) {
      if (j >= kk) {
        if (gi[j] != -1 || !(std::isinf(gs[j]) && gs[j] < 0)) fail("expected padding", j);
        continue;
      }
      if (gi[j] < 0 || gi[j] >= c.L || !std::isfinite(row[gi[j]])) {
        fail("invalid key", j);
        continue;
      }
      // One failure per row: the first check that fails ends it.
      if (!seen.insert(gi[j]).second) {
        fail("duplicate key", j);
        continue;
      }
      const float r = row[gi[j]];
      result.max_rel = std::max(result.max_rel, static_cast<double>(std::fabs(gs[j] - r) / scale_of(r)));
      const float kth = valid[kk - 1];
      if (std::fabs(gs[j] - r) > tol_of(r)) {
        fail("score mismatch", j);
      } else if (r < kth - tol_of(kth)) {
        fail("key below the k-th reference score", j);
      } else if (j > 0 && !(gs[j - 1] > gs[j] || (gs[j - 1] == gs[j] && gi[j - 1] < gi[j]))) {
        fail("order", j);
      }
    }
    if (kk > 0 && kk < nvalid) ++result.choice_rows;
    if (row_ok && kk > 0 && kk < nvalid) {
      const float kth = valid[kk - 1], next = valid[kk];
      if (kth - next > 2 * tol_of(kth)) {
        ++result.strict_rows;
        if (std::set<int32_t>(ri, ri + kk) != seen) fail("set differs from the reference although the k-th gap is clear", 0);
      }
    }
    if (row_ok && c.extra_row_check) c.extra_row_check(t, seen, kk, fail);
    if (!row_ok) ++result.failed_rows;
  }
  return result;
}

}  // namespace indexcache
