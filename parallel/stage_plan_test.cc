// The planner on the shipped real-model configs: every layer in exactly one contiguous stage,
// each stage within memory, P the smallest divisor that fits, train-mode stages beginning only at
// Full layers, indices carried where a stage begins with a Shared layer, an impossible fit named
// as such; and SplitStages on costs a runtime measured.
#include "parallel/stage_plan.h"

#include <gtest/gtest.h>

#include "parallel/weight_inventory.h"

namespace indexcache {
namespace {

ModelConfig Load(const std::string& name) {
  auto c = LoadModelConfig("configs/models/" + name);
  EXPECT_TRUE(c.ok()) << c.status().message();
  return *c;
}

PlanRequest H200s(int64_t gpus, int64_t seq_len, PlanMode mode) {
  PlanRequest r;
  r.gpus = gpus;
  r.gpu_memory_bytes = 141'000'000'000;
  r.reserve_bytes = 4'000'000'000;
  r.sequences = 16;
  r.costs.mode = mode;
  r.costs.seq_len = seq_len;
  r.costs.device = *DeviceProfileByName("h200");
  return r;
}

void ExpectCoversEveryLayerOnce(const StagePlan& plan, const ModelConfig& c, const PlanRequest& r) {
  ASSERT_EQ(static_cast<int64_t>(plan.stages.size()), plan.pipeline_stages);
  EXPECT_EQ(plan.pipeline_stages * plan.data_parallel, r.gpus);
  int next = 0;
  for (size_t s = 0; s < plan.stages.size(); ++s) {
    const PlannedStage& stage = plan.stages[s];
    EXPECT_EQ(stage.first_layer, next) << "stage " << s;
    EXPECT_LE(stage.first_layer, stage.last_layer);
    EXPECT_EQ(static_cast<int>(stage.pattern.size()), stage.last_layer - stage.first_layer + 1);
    EXPECT_EQ(stage.has_embedding, s == 0);
    EXPECT_LE(stage.weight_bytes + stage.workspace_bytes + r.reserve_bytes, r.gpu_memory_bytes) << "stage " << s;
    next = stage.last_layer + 1;
  }
  EXPECT_EQ(next, c.num_layers);
}

TEST(PlanPipeline, DeepSeekV32OnH200sGivesSaneNumbers) {
  const ModelConfig c = Load("deepseek_v32");
  const WeightInventory inv = *InventoryFromConfig(c);
  const double total_fp8 = static_cast<double>(inv.device_bytes(c.quant));
  EXPECT_GT(total_fp8, 660e9);
  EXPECT_LT(total_fp8, 700e9);
  double previous_step = 0;
  for (int64_t gpus : {8, 16, 32, 64}) {
    const PlanRequest r = H200s(gpus, 131072, PlanMode::kEval);
    auto plan = PlanPipeline(c, c.pattern, r);
    ASSERT_TRUE(plan.ok()) << gpus << ": " << plan.status().message();
    ExpectCoversEveryLayerOnce(*plan, c, r);
    EXPECT_TRUE(plan->stages.back().has_head);
    double weights = 0;
    for (const PlannedStage& s : plan->stages) weights += static_cast<double>(s.weight_bytes);
    EXPECT_DOUBLE_EQ(weights, total_fp8) << "eval holds every weight exactly once per replica";
    // 674 GB of FP8 weights need at least 5 of 141 GB; the smallest divisor of N that fits is 8.
    EXPECT_EQ(plan->pipeline_stages, 8) << gpus;
    EXPECT_EQ(plan->data_parallel, gpus / 8);
    const double m = static_cast<double>(plan->micro_batches);
    EXPECT_DOUBLE_EQ(plan->pipeline_efficiency, m / (m + 7));
    EXPECT_GT(plan->balance, 0.9);
    // ~1.1 s per V3.2 layer at 128K (the measured stack's attention and indexer, the measured
    // FP8-resident MoE block for the routed experts; a full-size 8-layer distillation measured
    // 1.7 s per layer with its loss and backward) x 61 layers x 16 sequences / N GPUs, divided by
    // the bubble efficiency (16 sequences over D replicas: few micro-batches at 64).
    const double ideal = 1.1 * 61 * 16 / static_cast<double>(gpus) / plan->pipeline_efficiency;
    EXPECT_GT(plan->step_time_s, ideal * 0.8) << gpus;
    EXPECT_LT(plan->step_time_s, ideal * 1.3) << gpus;
    EXPECT_LT(plan->step_time_fp8_gemm_s, plan->step_time_s);
    if (previous_step > 0) {
      EXPECT_LT(plan->step_time_s, previous_step);
    }
    previous_step = plan->step_time_s;
    // Smaller P does not fit: forcing 4 stages is an error naming the shortfall.
    PlanRequest forced = r;
    forced.pipeline_stages = 4;
    auto smaller = PlanPipeline(c, c.pattern, forced);
    ASSERT_FALSE(smaller.ok());
    EXPECT_NE(smaller.status().message().find("needs"), std::string::npos) << smaller.status().message();
  }
}

TEST(PlanPipeline, TrainStagesBeginOnlyAtFullLayers) {
  for (const char* name : {"deepseek_v32", "glm5"}) {
    const ModelConfig c = Load(name);
    // GLM-5's own pattern (FFF then every 4th) and V3.2 under a searched-looking irregular one.
    IndexPattern pattern = c.pattern;
    if (std::string(name) == "deepseek_v32") {
      std::string letters(61, 'S');
      for (int l : {0, 1, 3, 9, 10, 17, 25, 26, 33, 41, 42, 50, 55, 58}) letters[l] = 'F';
      pattern = *IndexPattern::Parse(letters, 61);
    }
    for (int64_t gpus : {8, 16, 32}) {
      const PlanRequest r = H200s(gpus, 32768, PlanMode::kTrain);
      auto plan = PlanPipeline(c, pattern, r);
      ASSERT_TRUE(plan.ok()) << name << " " << gpus << ": " << plan.status().message();
      ExpectCoversEveryLayerOnce(*plan, c, r);
      for (const PlannedStage& s : plan->stages) {
        EXPECT_TRUE(pattern.is_full(s.first_layer)) << name << ": a stage begins at Shared layer " << s.first_layer;
        EXPECT_FALSE(s.receives_indices);
        EXPECT_FALSE(s.has_head) << "train loads no LM head";
        EXPECT_EQ(s.pattern[0], 'F');
      }
      EXPECT_GT(plan->tokens_per_s, 0);
    }
  }
}

TEST(PlanPipeline, SharedFirstLayerReceivesTheIndicesOfItsFullLayer) {
  const ModelConfig c = Load("glm5");  // 21 Full of 78: F F F S S S F ...
  PlanRequest r = H200s(16, 32768, PlanMode::kEval);
  bool some_shared_start = false;
  for (int64_t p : {8, 16}) {
    r.pipeline_stages = p;
    auto plan = PlanPipeline(c, c.pattern, r);
    ASSERT_TRUE(plan.ok()) << plan.status().message();
    for (size_t s = 1; s < plan->stages.size(); ++s) {
      const int first = plan->stages[s].first_layer;
      EXPECT_EQ(plan->stages[s].receives_indices, !c.pattern.is_full(first));
      EXPECT_EQ(plan->stages[s].indices_from_layer, c.pattern.is_full(first) ? -1 : c.pattern.source_of(first));
      some_shared_start |= !c.pattern.is_full(first);
    }
  }
  EXPECT_TRUE(some_shared_start) << "eval splits are free to begin at Shared layers";
}

TEST(PlanPipeline, SearchCarriesIndicesAcrossEveryBoundaryAndCountsItsCache) {
  const ModelConfig c = Load("deepseek_v32");
  const PlanRequest r = H200s(16, 32768, PlanMode::kSearch);
  auto plan = PlanPipeline(c, IndexPattern::AllFull(61), r);
  ASSERT_TRUE(plan.ok()) << plan.status().message();
  for (size_t s = 1; s < plan->stages.size(); ++s) EXPECT_TRUE(plan->stages[s].receives_indices);
  // The cache: M sequences x T x (2H + 4k) per layer.
  const double per_layer = static_cast<double>(plan->micro_batches) * 32768 * (2 * 7168 + 4 * 2048);
  const PlannedStage& s1 = plan->stages[1];
  EXPECT_GT(static_cast<double>(s1.workspace_bytes), per_layer * (s1.last_layer - s1.first_layer + 1));
  EXPECT_GT(plan->step_time_s, 10 * plan->full_forward_s) << "a greedy step reruns ~N/2 forwards";
}

TEST(PlanPipeline, ImpossibleFitIsOneLineNamingTheShortfall) {
  const ModelConfig c = Load("deepseek_v32");
  auto plan = PlanPipeline(c, c.pattern, H200s(4, 131072, PlanMode::kEval));
  ASSERT_FALSE(plan.ok());
  const std::string m = plan.status().message();
  EXPECT_NE(m.find("does not fit on 4 GPUs"), std::string::npos) << m;
  EXPECT_NE(m.find("has 141.0 GB"), std::string::npos) << m;
  EXPECT_NE(m.find("it fits on"), std::string::npos) << m;
  EXPECT_EQ(m.find('\n'), std::string::npos) << m;
}

TEST(PlanPipeline, RejectsBadRequests) {
  const ModelConfig c = Load("deepseek_v32");
  PlanRequest r = H200s(8, 4096, PlanMode::kEval);
  r.pipeline_stages = 3;  // does not divide 8
  EXPECT_FALSE(PlanPipeline(c, c.pattern, r).ok());
  r = H200s(8, 4096, PlanMode::kTrain);
  r.pipeline_stages = 8;  // 1/16 has only 4 Full layers to begin stages at
  auto plan = PlanPipeline(c, *IndexPattern::Parse("1/16", 61), r);
  ASSERT_FALSE(plan.ok());
  EXPECT_NE(plan.status().message().find("Full layers"), std::string::npos) << plan.status().message();
  r = H200s(8, int64_t{1} << 30, PlanMode::kEval);
  EXPECT_FALSE(PlanPipeline(c, c.pattern, r).ok());
}

TEST(SplitStages, UsesMeasuredCosts) {
  // A runtime that measured its layers passes them in: 6 layers, the last two twice as slow.
  ModelCosts costs;
  costs.num_layers = 6;
  costs.items.push_back({"embedding", -1, false, 10, 0, 0, 0, 0});
  for (int l = 0; l < 6; ++l) costs.items.push_back({"layer", l, true, 10, 0, 0, l >= 4 ? 2.0 : 1.0, 0});
  costs.items.push_back({"head", 6, false, 10, 0, 0, 0, 0});
  auto stages = SplitStages(costs, IndexPattern::AllFull(6), PlanMode::kEval, 2, 1000);
  ASSERT_TRUE(stages.ok()) << stages.status().message();
  EXPECT_EQ((*stages)[0].last_layer, 3);  // 4 + 4 seconds
  EXPECT_DOUBLE_EQ((*stages)[0].seconds, 4.0);
  EXPECT_DOUBLE_EQ((*stages)[1].seconds, 4.0);
  EXPECT_FALSE(SplitStages(costs, IndexPattern::AllFull(6), PlanMode::kEval, 2, 25).ok());
}

}  // namespace
}  // namespace indexcache
