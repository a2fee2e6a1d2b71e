// LrSchedule: each kind's value at the start, during warmup, at the peak, at the cosine midpoint,
// at and past the end; kind names; validation of bad settings.
#include "optim/schedule.h"

#include <cmath>

#include "gtest/gtest.h"

namespace indexcache {
namespace {

TEST(ScheduleKindTest, NamesRoundTrip) {
  for (ScheduleKind kind : {ScheduleKind::kConstant, ScheduleKind::kWarmupConstant, ScheduleKind::kWarmupCosine}) {
    StatusOr<ScheduleKind> parsed = ParseScheduleKind(ScheduleKindName(kind));
    ASSERT_TRUE(parsed.ok()) << parsed.status().ToString();
    EXPECT_EQ(*parsed, kind);
  }
  EXPECT_STREQ(ScheduleKindName(ScheduleKind::kWarmupCosine), "warmup_cosine");
}

TEST(ScheduleKindTest, UnknownNameIsAnError) {
  StatusOr<ScheduleKind> parsed = ParseScheduleKind("cosine");
  ASSERT_FALSE(parsed.ok());
  EXPECT_EQ(parsed.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(parsed.status().message().find("'cosine'"), std::string::npos) << parsed.status().message();
  EXPECT_FALSE(LrSchedule::Create("linear", 1e-3).ok());
  EXPECT_FALSE(LrSchedule::Create("", 1e-3).ok());
}

TEST(LrScheduleTest, Constant) {
  StatusOr<LrSchedule> s = LrSchedule::Create("constant", 3e-4);
  ASSERT_TRUE(s.ok()) << s.status().ToString();
  for (int64_t step : {0, 1, 10, 1000000}) EXPECT_EQ(s->LearningRate(step), 3e-4) << step;
  EXPECT_EQ(s->LearningRate(-5), 3e-4);
}

TEST(LrScheduleTest, WarmupConstant) {
  StatusOr<LrSchedule> s = LrSchedule::Create("warmup_constant", 1e-3, /*warmup_steps=*/10);
  ASSERT_TRUE(s.ok()) << s.status().ToString();
  EXPECT_EQ(s->LearningRate(0), 0.0);
  EXPECT_DOUBLE_EQ(s->LearningRate(1), 1e-4);
  EXPECT_DOUBLE_EQ(s->LearningRate(5), 5e-4);
  EXPECT_DOUBLE_EQ(s->LearningRate(9), 9e-4);
  EXPECT_EQ(s->LearningRate(10), 1e-3);  // peak
  EXPECT_EQ(s->LearningRate(11), 1e-3);
  EXPECT_EQ(s->LearningRate(1 << 30), 1e-3);
  // With total_steps given, nothing changes after it.
  StatusOr<LrSchedule> bounded = LrSchedule::Create("warmup_constant", 1e-3, 10, 100);
  ASSERT_TRUE(bounded.ok());
  EXPECT_EQ(bounded->LearningRate(100), 1e-3);
  EXPECT_EQ(bounded->LearningRate(500), 1e-3);
  // No warmup: the peak from step 0.
  StatusOr<LrSchedule> none = LrSchedule::Create("warmup_constant", 1e-3, 0);
  ASSERT_TRUE(none.ok());
  EXPECT_EQ(none->LearningRate(0), 1e-3);
}

TEST(LrScheduleTest, WarmupCosine) {
  // Warmup 100, cosine over steps [100, 1100), floor 1e-5.
  StatusOr<LrSchedule> s = LrSchedule::Create("warmup_cosine", 1e-3, 100, 1100, 1e-5);
  ASSERT_TRUE(s.ok()) << s.status().ToString();
  EXPECT_EQ(s->LearningRate(0), 0.0);
  EXPECT_DOUBLE_EQ(s->LearningRate(50), 5e-4);
  EXPECT_EQ(s->LearningRate(100), 1e-3);                    // peak
  EXPECT_NEAR(s->LearningRate(600), (1e-3 + 1e-5) / 2, 1e-15);  // midpoint: halfway between
  // A quarter of the way: min + (peak - min) * (1 + cos(pi/4)) / 2.
  EXPECT_NEAR(s->LearningRate(350), 1e-5 + (1e-3 - 1e-5) * (1 + std::sqrt(0.5)) / 2, 1e-15);
  EXPECT_NEAR(s->LearningRate(1099), 1e-5, 1e-8);            // just before the end
  EXPECT_GT(s->LearningRate(1099), 1e-5);
  EXPECT_EQ(s->LearningRate(1100), 1e-5);                    // end
  EXPECT_EQ(s->LearningRate(5000), 1e-5);                    // past the end
  // Monotone: up through warmup, down after.
  for (int64_t step = 1; step <= 100; ++step) EXPECT_GT(s->LearningRate(step), s->LearningRate(step - 1));
  for (int64_t step = 101; step <= 1100; ++step) EXPECT_LT(s->LearningRate(step), s->LearningRate(step - 1));
}

TEST(LrScheduleTest, WarmupCosineEdgeCases) {
  // No warmup: peak at step 0; min_lr 0 by default.
  StatusOr<LrSchedule> s = LrSchedule::Create("warmup_cosine", 2e-3, 0, 10);
  ASSERT_TRUE(s.ok());
  EXPECT_EQ(s->LearningRate(0), 2e-3);
  EXPECT_NEAR(s->LearningRate(5), 1e-3, 1e-18);
  EXPECT_EQ(s->LearningRate(10), 0.0);
  // Warmup as long as the whole run: warmup, then the floor.
  StatusOr<LrSchedule> all_warmup = LrSchedule::Create("warmup_cosine", 1e-3, 10, 10, 1e-4);
  ASSERT_TRUE(all_warmup.ok());
  EXPECT_DOUBLE_EQ(all_warmup->LearningRate(5), 5e-4);
  EXPECT_EQ(all_warmup->LearningRate(10), 1e-4);
}

TEST(LrScheduleTest, Validation) {
  auto expect_invalid = [](const StatusOr<LrSchedule>& s, const std::string& needle) {
    ASSERT_FALSE(s.ok()) << needle;
    EXPECT_EQ(s.status().code(), StatusCode::kInvalidArgument);
    EXPECT_NE(s.status().message().find(needle), std::string::npos) << s.status().message();
  };
  expect_invalid(LrSchedule::Create("constant", -1e-3), "peak_lr");
  expect_invalid(LrSchedule::Create("constant", NAN), "peak_lr");
  expect_invalid(LrSchedule::Create("constant", INFINITY), "peak_lr");
  expect_invalid(LrSchedule::Create("warmup_cosine", 1e-3, 0, 10, -1e-5), "min_lr");
  expect_invalid(LrSchedule::Create("warmup_cosine", 1e-3, 0, 10, 2e-3), "min_lr");
  expect_invalid(LrSchedule::Create("warmup_constant", 1e-3, -1), "warmup_steps");
  expect_invalid(LrSchedule::Create("warmup_constant", 1e-3, 0, -1), "total_steps");
  expect_invalid(LrSchedule::Create("warmup_cosine", 1e-3, 11, 10), "exceeds total_steps");
  expect_invalid(LrSchedule::Create("warmup_constant", 1e-3, 11, 10), "exceeds total_steps");
  expect_invalid(LrSchedule::Create("warmup_cosine", 1e-3, 0, 0), "total_steps must be positive");
  expect_invalid(LrSchedule::Create("constant", 1e-3, 5), "warmup_steps must be 0");
  // Zero learning rate is allowed (a frozen run), as is warmup_constant without total_steps.
  EXPECT_TRUE(LrSchedule::Create("constant", 0.0).ok());
  EXPECT_TRUE(LrSchedule::Create("warmup_constant", 1e-3, 100).ok());
  // Validate() on a hand-filled value.
  LrSchedule s;
  s.kind = ScheduleKind::kWarmupCosine;
  s.peak_lr = 1e-3;
  s.warmup_steps = 20;
  s.total_steps = 10;
  EXPECT_FALSE(s.Validate().ok());
  s.total_steps = 20;
  EXPECT_TRUE(s.Validate().ok());
  EXPECT_EQ(s.ToString(), "warmup_cosine(peak_lr=0.001, min_lr=0, warmup_steps=20, total_steps=20)");
}

}  // namespace
}  // namespace indexcache
