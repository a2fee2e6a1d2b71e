#include "eval/position_loss.h"

#include <gtest/gtest.h>

namespace indexcache {
namespace {

TEST(PositionLoss, BucketsAverageBackToTheMean) {
  // Two windows of 11 tokens (10 predictions each), buckets of 3: sizes 3, 3, 3, 1.
  auto p = PositionLoss::Create(3, 11);
  ASSERT_TRUE(p.ok()) << p.status().ToString();
  std::vector<double> a, b;
  double total = 0;
  for (int t = 0; t < 10; ++t) {
    a.push_back(0.1 * t + 1.0);
    b.push_back(2.0 - 0.05 * t * t);
    total += a.back() + b.back();
  }
  p->Add(a);
  p->Add(b);
  ASSERT_EQ(p->buckets(), 4);
  EXPECT_EQ(p->count(0), 6);
  EXPECT_EQ(p->count(3), 2);
  double weighted = 0;
  int64_t n = 0;
  for (int64_t k = 0; k < p->buckets(); ++k) {
    weighted += p->mean(k) * p->count(k);
    n += p->count(k);
  }
  EXPECT_EQ(n, 20);
  EXPECT_NEAR(weighted / n, total / 20, 1e-12);
  // Bucket 1 holds positions 3, 4, 5 of both windows.
  EXPECT_NEAR(p->mean(1), (a[3] + a[4] + a[5] + b[3] + b[4] + b[5]) / 6, 1e-12);
}

TEST(PositionLoss, MergeEqualsAddingEverything) {
  auto one = PositionLoss::Create(4, 9), two = PositionLoss::Create(4, 9), all = PositionLoss::Create(4, 9);
  const std::vector<double> x = {1, 2, 3, 4, 5, 6, 7, 8}, y = {8, 7, 6, 5, 4, 3, 2, 1};
  one->Add(x);
  two->Add(y);
  all->Add(x);
  all->Add(y);
  one->Merge(*two);
  for (int64_t k = 0; k < all->buckets(); ++k) EXPECT_DOUBLE_EQ(one->sum(k), all->sum(k));
}

TEST(PositionLoss, BadSizesAreErrors) {
  EXPECT_FALSE(PositionLoss::Create(0, 100).ok());
  EXPECT_FALSE(PositionLoss::Create(1, int64_t{1} << 22).ok());  // too many buckets
  EXPECT_TRUE(PositionLoss::Create(1 << 20, 8).ok());             // one bucket
}

}  // namespace
}  // namespace indexcache
