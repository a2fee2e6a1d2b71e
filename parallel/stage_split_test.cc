#include "parallel/stage_split.h"

#include <gtest/gtest.h>

namespace indexcache {
namespace {

ModelConfig Layers(int n) {
  ModelConfig c;
  c.num_layers = n;
  return c;
}

TEST(StageSplitTest, BalancedByLayerCount) {
  auto s = BalancedStageSplit(8, 3);
  ASSERT_TRUE(s.ok());
  EXPECT_EQ(s->ToString(), "[0, 3) [3, 6) [6, 8)");
  EXPECT_EQ(s->StageOf(0), 0);
  EXPECT_EQ(s->StageOf(5), 1);
  EXPECT_EQ(s->StageOf(7), 2);
  EXPECT_EQ(s->StageOf(8), -1);
  EXPECT_EQ(BalancedStageSplit(4, 1)->ToString(), "[0, 4)");
  EXPECT_FALSE(BalancedStageSplit(2, 3).ok());
  EXPECT_FALSE(BalancedStageSplit(2, 0).ok());
}

TEST(StageSplitTest, ExplicitBoundaries) {
  StageSplitRequest req;
  req.stages = 3;
  req.boundaries = {2, 7};
  auto s = ChooseStageSplit(Layers(8), req);
  ASSERT_TRUE(s.ok()) << s.status().message();
  EXPECT_EQ(s->ToString(), "[0, 2) [2, 7) [7, 8)");
  req.boundaries = {7, 2};
  auto bad = ChooseStageSplit(Layers(8), req);
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.status().message().find("--stage-boundaries"), std::string::npos);
  req.boundaries = {4};
  EXPECT_FALSE(ChooseStageSplit(Layers(8), req).ok());  // 1 boundary for 3 stages
  EXPECT_EQ(*ParseStageBoundaries("3,6", "--stage-boundaries"), (std::vector<int>{3, 6}));
  EXPECT_FALSE(ParseStageBoundaries("3,,6", "--stage-boundaries").ok());
  EXPECT_FALSE(ParseStageBoundaries("-1", "--stage-boundaries").ok());
}

TEST(StageSplitTest, TrainingSplitsBeginAtFullLayers) {
  auto pattern = IndexPattern::Parse("FSSFSFSS", 8);
  ASSERT_TRUE(pattern.ok());
  StageSplitRequest req;
  req.stages = 3;
  req.pattern = &*pattern;
  req.what = "parallel.stage_boundaries";
  auto s = ChooseStageSplit(Layers(8), req);  // balanced [0,3) [3,6) [6,8) -> boundaries at F layers 3 and 5
  ASSERT_TRUE(s.ok()) << s.status().message();
  EXPECT_EQ(s->ToString(), "[0, 3) [3, 5) [5, 8)");
  req.boundaries = {3, 6};  // layer 6 is Shared: its Full layer 5 would be on another stage
  auto bad = ChooseStageSplit(Layers(8), req);
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.status().message().find("parallel.stage_boundaries"), std::string::npos);
  EXPECT_NE(bad.status().message().find("Shared layer 6"), std::string::npos);
  req.boundaries.clear();
  req.stages = 4;  // only 3 Full layers
  EXPECT_FALSE(ChooseStageSplit(Layers(8), req).ok());
}

}  // namespace
}  // namespace indexcache
