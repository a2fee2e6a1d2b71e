// CheckTopkRows (the indexer kernel tests' comparison) on the CPU: the reference's own output passes
// with its k-th gaps compared as sets, and each kind of wrong output is caught: a key swapped for
// a worse one, a duplicate, a missing padding, a wrong order, a score off by more than the
// tolerance, and what an extra row check adds.
#include "kernels/indexer_topk_test_util.h"

#include <cmath>
#include <random>
#include <vector>

#include "gtest/gtest-spi.h"
#include "gtest/gtest.h"
#include "kernels/indexer_topk.h"

namespace indexcache {
namespace {

struct Fixture {
  int64_t T = 6, L = 200, H = 8, D = 32, topk = 16;
  std::vector<float> q, k, w, rows, ref_sc;
  std::vector<int32_t> ref_idx;
  // Row 0 sees 11 keys (fewer than topk: it pads), the others 150-200 (a real choice).
  std::vector<int32_t> key_end = {11, 200, 200, 150, 200, 180};
  Fixture() {
    std::mt19937 rng(1);
    std::normal_distribution<float> normal(0.f, 1.f);
    q.resize(T * H * D), k.resize(L * D), w.resize(T * H);
    for (float& v : q) v = normal(rng);
    for (float& v : k) v = normal(rng);
    for (float& v : w) v = std::fabs(normal(rng)) / 4;
    IndexerTopkParams p;
    p.q = q.data(), p.k = k.data(), p.weights = w.data();
    p.T = T, p.L = L, p.H = H, p.D = D, p.topk = topk;
    p.key_end = key_end.data();
    p.scale = 1.f / std::sqrt(float(D));
    ref_idx.resize(T * topk), ref_sc.resize(T * topk), rows.resize(T * L);
    p.out_indices = ref_idx.data(), p.out_scores = ref_sc.data();
    IndexerTopkCpu(p);
    for (int64_t t = 0; t < T; ++t) IndexerScoresRowCpu(p, t, &rows[t * L]);
  }
  TopkCheck Check(const std::vector<int32_t>& idx, const std::vector<float>& sc) const {
    TopkCheck c;
    c.name = "fixture";
    c.T = T, c.L = L, c.topk = topk;
    c.ref_rows = rows.data(), c.ref_idx = ref_idx.data(), c.ref_scores = ref_sc.data();
    c.got_idx = idx.data(), c.got_scores = sc.data();
    return c;
  }
};

TEST(CheckTopkRowsTest, TheReferencePassesAndComparesSets) {
  const Fixture f;
  const TopkCheckResult r = CheckTopkRows(f.Check(f.ref_idx, f.ref_sc));
  EXPECT_EQ(r.failed_rows, 0);
  EXPECT_EQ(r.choice_rows, f.T - 1);  // row 0 has fewer keys than topk
  EXPECT_GT(r.strict_rows, 0);
  EXPECT_EQ(r.max_rel, 0.0);
}

TEST(CheckTopkRowsTest, EachKindOfWrongOutputFails) {
  const Fixture f;
  const int64_t t = 3, K = f.topk;
  // A selected key replaced by the worst valid key of the row (scores kept sorted).
  {
    std::vector<int32_t> idx = f.ref_idx;
    std::vector<float> sc = f.ref_sc;
    int32_t worst = 0;
    for (int32_t s = 0; s < 14; ++s) worst = f.rows[t * f.L + s] < f.rows[t * f.L + worst] ? s : worst;
    idx[t * K + K - 1] = worst;
    sc[t * K + K - 1] = f.rows[t * f.L + worst];
    EXPECT_NONFATAL_FAILURE(CheckTopkRows(f.Check(idx, sc)), "below the k-th reference score");
  }
  {
    std::vector<int32_t> idx = f.ref_idx;
    idx[t * K + 1] = idx[t * K];
    EXPECT_NONFATAL_FAILURE(CheckTopkRows(f.Check(idx, f.ref_sc)), "duplicate key");
  }
  {
    std::vector<int32_t> idx = f.ref_idx;
    idx[K - 1] = 0;  // row 0's padding
    EXPECT_NONFATAL_FAILURE(CheckTopkRows(f.Check(idx, f.ref_sc)), "expected padding");
  }
  {
    std::vector<int32_t> idx = f.ref_idx;
    std::vector<float> sc = f.ref_sc;
    std::swap(idx[t * K], idx[t * K + 1]);
    std::swap(sc[t * K], sc[t * K + 1]);
    EXPECT_NONFATAL_FAILURE(CheckTopkRows(f.Check(idx, sc)), "order");
  }
  {
    std::vector<float> sc = f.ref_sc;
    sc[t * K + 2] *= 1.01f;
    EXPECT_NONFATAL_FAILURE(CheckTopkRows(f.Check(f.ref_idx, sc)), "score mismatch");
  }
  {
    TopkCheck c = f.Check(f.ref_idx, f.ref_sc);
    c.extra_row_check = [](int64_t row, const std::set<int32_t>&, int64_t,
                           const std::function<void(const std::string&, int64_t)>& fail) {
      if (row == 2) fail("the caller's rule", 0);
    };
    EXPECT_NONFATAL_FAILURE(CheckTopkRows(c), "the caller's rule");
  }
}

}  // namespace
}  // namespace indexcache
