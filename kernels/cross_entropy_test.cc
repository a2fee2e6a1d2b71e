// CrossEntropyRowsCpu against hand-computed values: uniform logits give log(V); a one-hot logit
// gives log(1 + (V-1) e^-a); a large offset must not change the result (max shift); NaN propagates.
#include "kernels/cross_entropy.h"

#include <cmath>
#include <vector>

#include "gtest/gtest.h"

namespace indexcache {
namespace {

TEST(CrossEntropyRowsCpu, HandComputedRows) {
  const int64_t V = 5;
  std::vector<float> logits = {0, 0, 0, 0, 0,      // uniform
                               3, 0, 0, 0, 0,      // target is the peak
                               3, 0, 0, 0, 0,      // target is not the peak
                               1000, 1000, 1000, 1000, 1003};  // offset: overflows without the max shift
  const std::vector<int32_t> targets = {2, 0, 4, 4};
  std::vector<double> nll(4);
  CrossEntropyRowsCpu(logits.data(), targets.data(), 4, V, nll.data());
  const double z = std::exp(3.0) + 4.0;
  EXPECT_NEAR(nll[0], std::log(5.0), 1e-12);
  EXPECT_NEAR(nll[1], std::log(z) - 3.0, 1e-12);
  EXPECT_NEAR(nll[2], std::log(z), 1e-12);
  EXPECT_NEAR(nll[3], std::log(z) - 3.0, 1e-9);
}

TEST(CrossEntropyRowsCpu, NanPropagates) {
  std::vector<float> logits = {0, std::nanf(""), 0};
  const int32_t target = 0;
  double nll = 0;
  CrossEntropyRowsCpu(logits.data(), &target, 1, 3, &nll);
  EXPECT_FALSE(std::isfinite(nll));
}

}  // namespace
}  // namespace indexcache
