// NextTokenLoss / SumLosses against a loss worked out by hand.
#include "model/lm_loss.h"

#include <cmath>

#include <gtest/gtest.h>

namespace indexcache {
namespace {

TEST(LmLoss, NextTokenLossMatchesAHandComputation) {
  // 3 positions, vocabulary 3. Position t predicts tokens[t + 1]:
  //   row 0 [0, 0, 0]      -> token 2: -log(1/3)                      = log 3
  //   row 1 [ln 1, ln 3, 0] = probabilities 1/5, 3/5, 1/5 -> token 1: -log(3/5) = log(5/3)
  //   row 2 is never scored (nothing follows the last token).
  Tensor logits = Tensor::Zeros(DType::kF32, {3, 3});
  float* d = logits.data<float>();
  d[3] = 0.0f;
  d[4] = std::log(3.0f);
  d[5] = 0.0f;
  d[6] = 100.0f;  // would dominate if the last row were scored
  const LossSum sum = NextTokenLoss(logits, {0, 2, 1});
  EXPECT_EQ(sum.count, 2);
  EXPECT_NEAR(sum.nll, std::log(3.0) + std::log(5.0 / 3.0), 1e-6);  // = log 5
  EXPECT_NEAR(sum.mean(), std::log(5.0) / 2, 1e-6);
}

TEST(LmLoss, LargeLogitsDoNotOverflow) {
  // A max-shifted log-sum-exp: logits of 1e4 give the same loss as logits of 0 and -1e4 shifted.
  Tensor logits = Tensor::Zeros(DType::kF32, {2, 2});
  logits.data<float>()[0] = 10000.0f;
  logits.data<float>()[1] = 10000.0f - std::log(3.0f);
  const LossSum sum = NextTokenLoss(logits, {5, 1});
  // probabilities 3/4, 1/4; token 1 -> log 4.
  EXPECT_NEAR(sum.nll, std::log(4.0), 1e-3);
  EXPECT_TRUE(std::isfinite(sum.nll));
}

TEST(LmLoss, ShortSequencesAndSums) {
  EXPECT_EQ(NextTokenLoss(Tensor::Zeros(DType::kF32, {1, 4}), {1}).count, 0);
  const LossSum s = SumLosses({0.5, 1.5, 2.0});
  EXPECT_EQ(s.count, 3);
  EXPECT_DOUBLE_EQ(s.nll, 4.0);
  LossSum total;
  total.Add(s);
  total.Add(SumLosses({1.0}));
  EXPECT_DOUBLE_EQ(total.mean(), 5.0 / 4);
  EXPECT_EQ(LossSum().mean(), 0.0);
}

}  // namespace
}  // namespace indexcache
