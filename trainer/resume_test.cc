// Tests for trainer/resume: which checkpoint --resume continues from, and that a checkpoint whose
// parts are wrong or disagree is skipped (issue 12: a transposed `wk` loaded, a step beyond
// `steps` trained nothing, a step of -1 trained extra steps, parts of different saves were mixed,
// NaN weights were resumed from).
#include "trainer/resume.h"

#include <cmath>

#include "core/file_util.h"
#include "core/test_util.h"
#include "gtest/gtest.h"

namespace indexcache {
namespace {

Tensor Filled(Shape shape, float value) {
  Tensor t = Tensor::Zeros(DType::kF32, std::move(shape));
  for (int64_t i = 0; i < t.numel(); ++i) t.data<float>()[i] = value;
  return t;
}

ResumeExpectations Expect() {
  ResumeExpectations e;
  e.params = {{"model.layers.0.self_attn.indexer.wk.weight", {4, 8}}, {"model.layers.0.self_attn.indexer.k_norm.bias", {4}}};
  e.total_steps = 10;
  e.pattern = "FS";
  return e;
}

// A checkpoint as the trainer writes it; `edit` breaks one thing.
struct Save {
  int64_t step = 3;
  nlohmann::json state;
  NamedTensors weights, optimizer;
  std::map<std::string, std::string> metadata;
};

Save Good(int64_t step) {
  Save s;
  s.step = step;
  s.state = {{"step", step}, {"adamw_step", step}, {"cursor", {{"epoch", 0}}}, {"nonfinite_in_row", 0}, {"pattern", "FS"}};
  s.weights = {{"model.layers.0.self_attn.indexer.wk.weight", Filled({4, 8}, 0.5f)},
               {"model.layers.0.self_attn.indexer.k_norm.bias", Filled({4}, 0.25f)}};
  s.optimizer = {{"model.layers.0.self_attn.indexer.wk.weight.exp_avg", Filled({4, 8}, 0.0f)}};
  s.metadata = {{"step", std::to_string(step)}, {"adamw.step", std::to_string(step)}};
  return s;
}

void Write(const std::string& dir, const Save& s) {
  ASSERT_TRUE(s.step >= 0);
  auto w = CheckpointWriter::Begin(dir, s.step);
  ASSERT_TRUE(w.ok());
  ASSERT_TRUE((*w)->AddTensors(kCheckpointWeightsFile, s.weights, s.metadata).ok());
  ASSERT_TRUE((*w)->AddTensors(kCheckpointOptimizerFile, s.optimizer, s.metadata).ok());
  ASSERT_TRUE((*w)->AddJson(kCheckpointStateFile, s.state).ok());
  ASSERT_TRUE((*w)->Commit().ok());
}

std::string ErrorOf(const Save& s) {
  const std::string dir = MakeTempDir();
  Write(dir, s);
  auto all = ListCheckpoints(dir);
  EXPECT_TRUE(all.ok() && all->size() == 1);
  auto p = ReadResumePoint(all->front(), Expect());
  EXPECT_FALSE(p.ok()) << "accepted a bad checkpoint";
  return p.ok() ? "" : p.status().message();
}

bool Has(const std::string& s, const std::string& needle) { return s.find(needle) != std::string::npos; }

TEST(ResumeTest, AcceptsAGoodCheckpoint) {
  const std::string dir = MakeTempDir();
  Write(dir, Good(3));
  auto all = ListCheckpoints(dir);
  ASSERT_TRUE(all.ok());
  auto p = ReadResumePoint(all->front(), Expect());
  ASSERT_TRUE(p.ok()) << p.status().ToString();
  EXPECT_EQ(p->step, 3);
  ASSERT_EQ(p->weights.size(), 2u);
  EXPECT_EQ(p->weights[0].first, "model.layers.0.self_attn.indexer.wk.weight");
}

TEST(ResumeTest, TransposedTensorIsRejected) {
  Save s = Good(3);
  s.weights[0].second = Filled({8, 4}, 0.5f);  // same element count, wrong shape
  const std::string e = ErrorOf(s);
  EXPECT_TRUE(Has(e, "wk.weight") && Has(e, "[8, 4]") && Has(e, "[4, 8]")) << e;
}

TEST(ResumeTest, StepOutsideTheRunOrDisagreeingWithTheDirectoryIsRejected) {
  Save s = Good(3);
  s.state["step"] = 100;  // beyond steps = 10: would "resume" and train nothing
  EXPECT_TRUE(Has(ErrorOf(s), "field 'step'"));
  s.state["step"] = -1;  // would train extra steps
  EXPECT_TRUE(Has(ErrorOf(s), "field 'step'"));
  s.state["step"] = 2;  // directory step_00000003
  EXPECT_TRUE(Has(ErrorOf(s), "step_00000003"));
  s = Good(3);
  s.state["adamw_step"] = 7;  // more optimizer steps than training steps
  EXPECT_TRUE(Has(ErrorOf(s), "adamw_step"));
  s = Good(3);
  s.state["step"] = "3";
  EXPECT_TRUE(Has(ErrorOf(s), "trainer_state.json: field 'step' must be an integer"));
}

TEST(ResumeTest, PartsOfDifferentSavesAreRejected) {
  Save s = Good(3);
  s.metadata["step"] = "2";  // weights and optimizer of step 2 under step 3's state
  EXPECT_TRUE(Has(ErrorOf(s), "parts of different saves"));
  s = Good(3);
  s.metadata["adamw.step"] = "1";
  EXPECT_TRUE(Has(ErrorOf(s), "adamw.step"));
}

TEST(ResumeTest, NonFiniteOrMissingOrExtraTensorsAreRejected) {
  Save s = Good(3);
  s.weights[1].second.data<float>()[2] = NAN;
  EXPECT_TRUE(Has(ErrorOf(s), "NaN or Inf"));
  s = Good(3);
  s.weights.pop_back();
  EXPECT_TRUE(Has(ErrorOf(s), "missing tensor"));
  s = Good(3);
  s.weights.emplace_back("model.layers.5.self_attn.indexer.wk.weight", Filled({4, 8}, 0.f));
  EXPECT_TRUE(Has(ErrorOf(s), "unexpected tensor"));
  s = Good(3);
  s.state["pattern"] = "FF";
  EXPECT_TRUE(Has(ErrorOf(s), "pattern"));
  s = Good(3);
  s.state.erase("cursor");
  EXPECT_TRUE(Has(ErrorOf(s), "cursor"));
}

TEST(ResumeTest, FallsBackToTheNewestValidCheckpoint) {
  const std::string dir = MakeTempDir();
  Write(dir, Good(2));
  Write(dir, Good(4));
  Save bad = Good(6);
  bad.weights[0].second.data<float>()[0] = INFINITY;
  Write(dir, bad);
  std::vector<std::string> warnings;
  std::vector<int64_t> applied;
  auto apply = [&](const ResumePoint& p) {
    applied.push_back(p.step);
    return Status::Ok();
  };
  auto p = FindResumePoint(dir, Expect(), apply, &warnings);
  ASSERT_TRUE(p.ok()) << p.status().ToString();
  ASSERT_TRUE(p->has_value());
  EXPECT_EQ((*p)->step, 4);
  EXPECT_EQ(applied, std::vector<int64_t>{4});
  ASSERT_EQ(warnings.size(), 1u);
  EXPECT_TRUE(Has(warnings[0], "step_00000006")) << warnings[0];
  // A part the caller loads (optimizer, cursor) failing also falls back.
  warnings.clear();
  auto reject4 = [&](const ResumePoint& p) { return p.step == 4 ? DataLoss("cursor broken") : Status::Ok(); };
  p = FindResumePoint(dir, Expect(), reject4, &warnings);
  ASSERT_TRUE(p.ok() && p->has_value());
  EXPECT_EQ((*p)->step, 2);
  EXPECT_EQ(warnings.size(), 2u);
}

TEST(ResumeTest, NoCheckpointIsAFreshStartButNoUsableOneIsAnError) {
  const std::string dir = MakeTempDir();
  auto none = FindResumePoint(JoinPath(dir, "absent"), Expect(), [](const ResumePoint&) { return Status::Ok(); }, nullptr);
  ASSERT_TRUE(none.ok());
  EXPECT_FALSE(none->has_value());
  Save bad = Good(3);
  bad.state["step"] = 99;
  Write(dir, bad);
  auto err = FindResumePoint(dir, Expect(), [](const ResumePoint&) { return Status::Ok(); }, nullptr);
  ASSERT_FALSE(err.ok());
  EXPECT_TRUE(Has(err.status().message(), "no usable checkpoint")) << err.status().ToString();
}

}  // namespace
}  // namespace indexcache
