// BalancedSplit against brute force: on small random problems it finds the fastest split that
// fits, covers every item exactly once in order, respects forbidden cuts and the capacity, and
// reports an impossible capacity as an error.
#include "parallel/contiguous_split.h"

#include <algorithm>
#include <functional>
#include <limits>
#include <random>

#include <gtest/gtest.h>

namespace indexcache {
namespace {

// Every split by enumeration: the fastest slowest-stage time among fitting splits (inf if none).
double BruteForceFastest(const SplitProblem& p) {
  const int n = static_cast<int>(p.items.size());
  double best = std::numeric_limits<double>::infinity();
  std::vector<int> starts = {0};
  std::function<void(int)> recurse = [&](int from) {
    if (static_cast<int>(starts.size()) == p.stages) {
      starts.push_back(n);
      double slowest = 0;
      bool fits = true;
      for (int s = 0; s < p.stages; ++s) {
        double t = 0;
        int64_t b = 0;
        for (int i = starts[s]; i < starts[s + 1]; ++i) t += p.items[i].seconds, b += p.items[i].bytes;
        slowest = std::max(slowest, t);
        fits = fits && b <= p.capacity_bytes;
      }
      if (fits) best = std::min(best, slowest);
      starts.pop_back();
      return;
    }
    for (int next = from + 1; next < n; ++next) {
      if (!p.cut_allowed.empty() && !p.cut_allowed[next]) continue;
      starts.push_back(next);
      recurse(next);
      starts.pop_back();
    }
  };
  recurse(0);
  return best;
}

void ExpectValidSplit(const SplitProblem& p, const Split& split) {
  const int n = static_cast<int>(p.items.size());
  ASSERT_EQ(static_cast<int>(split.starts.size()), p.stages + 1);
  EXPECT_EQ(split.starts.front(), 0);
  EXPECT_EQ(split.starts.back(), n);
  for (int s = 0; s < p.stages; ++s) {
    EXPECT_LT(split.starts[s], split.starts[s + 1]) << "stage " << s << " is empty";
    if (s > 0 && !p.cut_allowed.empty()) EXPECT_TRUE(p.cut_allowed[split.starts[s]]) << "forbidden cut at " << split.starts[s];
    int64_t bytes = 0;
    for (int i = split.starts[s]; i < split.starts[s + 1]; ++i) bytes += p.items[i].bytes;
    EXPECT_LE(bytes, p.capacity_bytes);
  }
}

TEST(BalancedSplit, MatchesBruteForceOnRandomProblems) {
  std::mt19937 rng(7);
  int feasible = 0;
  for (int trial = 0; trial < 400; ++trial) {
    SplitProblem p;
    const int n = 2 + static_cast<int>(rng() % 9);
    for (int i = 0; i < n; ++i) {
      p.items.push_back({0.1 + (rng() % 1000) / 100.0, static_cast<int64_t>(1 + rng() % 50)});
    }
    if (trial % 2) {
      p.cut_allowed.assign(n, false);
      for (int i = 1; i < n; ++i) p.cut_allowed[i] = rng() % 3 != 0;
    }
    p.stages = 1 + static_cast<int>(rng() % std::min(n, 5));
    p.capacity_bytes = 30 + static_cast<int64_t>(rng() % 120);
    const double expected = BruteForceFastest(p);
    auto split = BalancedSplit(p);
    if (expected == std::numeric_limits<double>::infinity()) {
      EXPECT_FALSE(split.ok()) << "trial " << trial;
      continue;
    }
    ++feasible;
    ASSERT_TRUE(split.ok()) << "trial " << trial << ": " << split.status().message();
    ExpectValidSplit(p, *split);
    EXPECT_NEAR(split->slowest_seconds, expected, 1e-9) << "trial " << trial;
  }
  EXPECT_GT(feasible, 100);
}

TEST(BalancedSplit, EvenCostsSplitEvenly) {
  SplitProblem p;
  p.items.assign(12, {1.0, 1});
  p.stages = 4;
  p.capacity_bytes = 100;
  auto split = BalancedSplit(p);
  ASSERT_TRUE(split.ok());
  EXPECT_EQ(split->starts, (std::vector<int>{0, 3, 6, 9, 12}));
  EXPECT_DOUBLE_EQ(split->slowest_seconds, 3.0);
}

TEST(BalancedSplit, MemoryOutweighsBalance) {
  // Time alone would cut 2 + 2 items; the heavy item 0 forces it into a stage of its own.
  SplitProblem p;
  p.items = {{1.0, 90}, {1.0, 20}, {1.0, 5}, {1.0, 5}};
  p.stages = 2;
  p.capacity_bytes = 100;
  auto split = BalancedSplit(p);
  ASSERT_TRUE(split.ok());
  EXPECT_EQ(split->starts, (std::vector<int>{0, 1, 4}));
  EXPECT_EQ(split->largest_bytes, 90);
}

TEST(BalancedSplit, ImpossibleCapacityIsAnErrorNamingTheNeed) {
  SplitProblem p;
  p.items = {{1.0, 60}, {1.0, 60}, {1.0, 60}};
  p.stages = 2;
  p.capacity_bytes = 100;
  auto split = BalancedSplit(p);
  ASSERT_FALSE(split.ok());
  EXPECT_NE(split.status().message().find("needs at least 120 bytes"), std::string::npos) << split.status().message();
  EXPECT_EQ(SmallestLargestStageBytes(p), 120);
}

TEST(BalancedSplit, RejectsBadArguments) {
  SplitProblem p;
  p.items = {{1.0, 1}, {1.0, 1}};
  p.capacity_bytes = 10;
  p.stages = 3;
  EXPECT_FALSE(BalancedSplit(p).ok());
  p.stages = 2;
  p.cut_allowed = {true, false};
  EXPECT_FALSE(BalancedSplit(p).ok());  // the only cut is forbidden
  p.cut_allowed = {true};
  EXPECT_FALSE(BalancedSplit(p).ok());  // wrong length
  p.cut_allowed.clear();
  p.items[1].bytes = std::numeric_limits<int64_t>::max();
  p.items[0].bytes = 1;
  EXPECT_FALSE(BalancedSplit(p).ok());  // overflow
}

}  // namespace
}  // namespace indexcache
