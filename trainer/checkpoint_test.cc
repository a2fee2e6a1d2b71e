#include "trainer/checkpoint.h"

#include <gtest/gtest.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstring>
#include <string>
#include <vector>

#include "core/file_util.h"
#include "trainer/fs_util.h"
#include "core/test_util.h"

namespace indexcache {
namespace {

Tensor FloatTensor(Shape shape, float start) {
  Tensor t = Tensor::Zeros(DType::kF32, std::move(shape));
  for (int64_t i = 0; i < t.numel(); ++i) t.data<float>()[i] = start + static_cast<float>(i);
  return t;
}

CheckpointContents SmallCheckpoint(int64_t step) {
  CheckpointContents c;
  c.tensors[kCheckpointWeightsFile] = {
      {"layers.0.indexer.wq_b.weight", FloatTensor({4, 3}, static_cast<float>(step))},
      {"layers.0.indexer.k_norm.weight", FloatTensor({3}, -1)}};
  c.tensors[kCheckpointOptimizerFile] = {
      {"exp_avg.layers.0.indexer.wq_b.weight", FloatTensor({4, 3}, 0.5f)},
      {"exp_avg_sq.layers.0.indexer.wq_b.weight", FloatTensor({4, 3}, 0.25f)}};
  c.json[kCheckpointStateFile] = {{"step", step}, {"tokens_seen", step * 128}, {"rng", {1, 2, 3}}};
  c.text[kCheckpointConfigFile] = "steps: 10\n";
  c.tensor_metadata = {{"step", std::to_string(step)}};
  return c;
}

std::vector<int64_t> Steps(const std::string& dir) {
  const auto list = ListCheckpoints(dir);
  EXPECT_TRUE(list.ok()) << list.status().ToString();
  std::vector<int64_t> steps;
  if (list.ok()) {
    for (const CheckpointInfo& c : *list) steps.push_back(c.step);
  }
  return steps;
}

std::vector<std::string> Entries(const std::string& dir) {
  const auto names = ListDirectory(dir);
  EXPECT_TRUE(names.ok()) << names.status().ToString();
  return names.ok() ? *names : std::vector<std::string>{};
}

TEST(CheckpointTest, DirName) {
  EXPECT_EQ(CheckpointDirName(0), "step_00000000");
  EXPECT_EQ(CheckpointDirName(500), "step_00000500");
  EXPECT_EQ(CheckpointDirName(123456789), "step_123456789");
}

TEST(CheckpointTest, RoundTrip) {
  const std::string dir = JoinPath(MakeTempDir(), "ckpt");  // created on demand
  const auto path = WriteCheckpoint(dir, 500, SmallCheckpoint(500));
  ASSERT_TRUE(path.ok()) << path.status().ToString();
  EXPECT_EQ(*path, JoinPath(dir, "step_00000500"));
  EXPECT_EQ(Entries(dir), std::vector<std::string>{"step_00000500"});  // no temp directory left
  EXPECT_EQ(Entries(*path), (std::vector<std::string>{"optimizer.safetensors", "train_config.textproto",
                                                      "trainer_state.json", "weights.safetensors"}));

  const auto weights = ReadCheckpointTensors(*path, kCheckpointWeightsFile);
  ASSERT_TRUE(weights.ok()) << weights.status().ToString();
  ASSERT_EQ(weights->size(), 2u);  // sorted by name
  EXPECT_EQ((*weights)[0].first, "layers.0.indexer.k_norm.weight");
  EXPECT_EQ((*weights)[1].first, "layers.0.indexer.wq_b.weight");
  const Tensor& w = (*weights)[1].second;
  EXPECT_EQ(w.dtype(), DType::kF32);
  EXPECT_EQ(w.shape(), (Shape{4, 3}));
  for (int64_t i = 0; i < 12; ++i) EXPECT_EQ(w.data<float>()[i], 500.0f + i);

  const auto opt = ReadCheckpointTensors(*path, kCheckpointOptimizerFile);
  ASSERT_TRUE(opt.ok()) << opt.status().ToString();
  ASSERT_EQ(opt->size(), 2u);
  EXPECT_EQ((*opt)[1].second.data<float>()[11], 11.25f);

  auto st = SafetensorsFile::Open(JoinPath(*path, kCheckpointWeightsFile));
  ASSERT_TRUE(st.ok());
  EXPECT_EQ((*st)->metadata().at("step"), "500");

  const auto state = ReadCheckpointJson(*path, kCheckpointStateFile);
  ASSERT_TRUE(state.ok()) << state.status().ToString();
  EXPECT_EQ((*state)["step"], 500);
  EXPECT_EQ((*state)["tokens_seen"], 64000);
  EXPECT_EQ((*state)["rng"], nlohmann::json({1, 2, 3}));

  const auto config = ReadCheckpointText(*path, kCheckpointConfigFile);
  ASSERT_TRUE(config.ok());
  EXPECT_EQ(*config, "steps: 10\n");
}

TEST(CheckpointTest, ReaderErrorsNameTheFile) {
  const std::string dir = MakeTempDir();
  const auto path = WriteCheckpoint(dir, 1, SmallCheckpoint(1));
  ASSERT_TRUE(path.ok());
  auto missing = ReadCheckpointTensors(*path, "nope.safetensors");
  ASSERT_FALSE(missing.ok());
  EXPECT_NE(missing.status().message().find("nope.safetensors"), std::string::npos);

  ASSERT_TRUE(WriteFileAtomic(JoinPath(*path, "broken.json"), "{\"step\": ").ok());
  auto broken = ReadCheckpointJson(*path, "broken.json");
  ASSERT_FALSE(broken.ok());
  EXPECT_NE(broken.status().message().find("broken.json"), std::string::npos);
  EXPECT_EQ(broken.status().message().find('\n'), std::string::npos);
}

TEST(CheckpointTest, BadFileNamesAreRejected) {
  const std::string dir = MakeTempDir();
  auto writer = CheckpointWriter::Begin(dir, 3);
  ASSERT_TRUE(writer.ok());
  EXPECT_FALSE((*writer)->AddText("../escape", "x").ok());
  EXPECT_FALSE((*writer)->AddText(".hidden", "x").ok());
  EXPECT_FALSE((*writer)->AddText("", "x").ok());
  EXPECT_TRUE((*writer)->AddText("a.txt", "x").ok());
  EXPECT_FALSE((*writer)->AddJson("a.txt", {}).ok());  // given twice
  EXPECT_FALSE(CheckpointWriter::Begin(dir, -1).ok());
}

TEST(CheckpointTest, AbandonedWriterLeavesNothing) {
  const std::string dir = MakeTempDir();
  {
    auto writer = CheckpointWriter::Begin(dir, 7);
    ASSERT_TRUE(writer.ok());
    ASSERT_TRUE((*writer)->AddJson(kCheckpointStateFile, {{"step", 7}}).ok());
    EXPECT_TRUE(IsDirectory((*writer)->temp_dir()));
    EXPECT_TRUE(Steps(dir).empty());  // nothing visible before Commit()
  }
  EXPECT_TRUE(Entries(dir).empty());
}

TEST(CheckpointTest, ListLatestAndPrune) {
  const std::string dir = MakeTempDir();
  EXPECT_TRUE(Steps(JoinPath(dir, "missing")).empty());
  auto none = LatestCheckpoint(dir);
  ASSERT_TRUE(none.ok());
  EXPECT_FALSE(none->has_value());

  for (int64_t step : {300, 100, 200, 1000}) {
    ASSERT_TRUE(WriteCheckpoint(dir, step, SmallCheckpoint(step)).ok());
  }
  // Names that only look like checkpoints are ignored.
  ASSERT_TRUE(MakeDirectories(JoinPath(dir, "step_12")).ok());
  ASSERT_TRUE(MakeDirectories(JoinPath(dir, "step_000000400")).ok());
  ASSERT_TRUE(MakeDirectories(JoinPath(dir, "step_0000050x")).ok());
  ASSERT_TRUE(WriteFileAtomic(JoinPath(dir, "step_00000600"), "a file").ok());
  EXPECT_EQ(Steps(dir), (std::vector<int64_t>{100, 200, 300, 1000}));

  auto latest = LatestCheckpoint(dir);
  ASSERT_TRUE(latest.ok());
  ASSERT_TRUE(latest->has_value());
  EXPECT_EQ((*latest)->step, 1000);
  EXPECT_EQ((*latest)->path, JoinPath(dir, "step_00001000"));

  auto removed = PruneCheckpoints(dir, 2);
  ASSERT_TRUE(removed.ok()) << removed.status().ToString();
  EXPECT_EQ(*removed, (std::vector<int64_t>{100, 200}));
  EXPECT_EQ(Steps(dir), (std::vector<int64_t>{300, 1000}));
  EXPECT_FALSE(IsDirectory(JoinPath(dir, "step_00000100")));
  // No temp directory left behind by the deletions.
  for (const std::string& name : Entries(dir)) EXPECT_NE(name.rfind(".tmp_", 0), 0u) << name;

  removed = PruneCheckpoints(dir, 5);
  ASSERT_TRUE(removed.ok());
  EXPECT_TRUE(removed->empty());
  EXPECT_FALSE(PruneCheckpoints(dir, 0).ok());
}

TEST(CheckpointTest, SameStepIsReplacedWhole) {
  const std::string dir = MakeTempDir();
  CheckpointContents first = SmallCheckpoint(5);
  first.text["only_in_first.txt"] = "old";
  ASSERT_TRUE(WriteCheckpoint(dir, 5, first).ok());
  const auto path = WriteCheckpoint(dir, 5, SmallCheckpoint(6));
  ASSERT_TRUE(path.ok()) << path.status().ToString();
  EXPECT_EQ(Entries(dir), std::vector<std::string>{"step_00000005"});
  EXPECT_FALSE(FileExists(JoinPath(*path, "only_in_first.txt")));
  const auto state = ReadCheckpointJson(*path, kCheckpointStateFile);
  ASSERT_TRUE(state.ok());
  EXPECT_EQ((*state)["step"], 6);
}

// A save killed part-way (here: a child process that exits without committing, so no destructor
// cleans up) and leftovers of older crashes must not disturb the committed checkpoints.
TEST(CheckpointTest, CrashLeftoversAreIgnored) {
  const std::string dir = MakeTempDir();
  ASSERT_TRUE(WriteCheckpoint(dir, 10, SmallCheckpoint(10)).ok());
  ASSERT_TRUE(WriteCheckpoint(dir, 20, SmallCheckpoint(20)).ok());

  const pid_t child = ::fork();
  ASSERT_GE(child, 0);
  if (child == 0) {
    auto writer = CheckpointWriter::Begin(dir, 30);
    if (!writer.ok() ||
        !(*writer)
             ->AddTensors(kCheckpointWeightsFile, SmallCheckpoint(30).tensors[kCheckpointWeightsFile])
             .ok()) {
      ::_exit(1);
    }
    ::_exit(0);  // "crash": no Commit(), no destructors
  }
  int status = 0;
  ASSERT_EQ(::waitpid(child, &status, 0), child);
  ASSERT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0);
  const std::string child_tmp = JoinPath(dir, ".tmp_step_00000030_" + std::to_string(child));
  ASSERT_TRUE(IsDirectory(child_tmp));

  // An older crash mid-file: a truncated safetensors and a stray atomic-write temp file.
  const std::string old_tmp = JoinPath(dir, ".tmp_step_00000040_999999");
  ASSERT_TRUE(MakeDirectories(old_tmp).ok());
  ASSERT_TRUE(WriteFileAtomic(JoinPath(old_tmp, "weights.safetensors"), std::string("\x40\x00\x00", 3)).ok());
  ASSERT_TRUE(WriteFileAtomic(JoinPath(old_tmp, "trainer_state.json.tmp.999999"), "{\"st").ok());
  // And a deletion interrupted half-way.
  ASSERT_TRUE(MakeDirectories(JoinPath(dir, ".tmp_delete_step_00000005_999999")).ok());

  EXPECT_EQ(Steps(dir), (std::vector<int64_t>{10, 20}));
  auto latest = LatestCheckpoint(dir);
  ASSERT_TRUE(latest.ok() && latest->has_value());
  EXPECT_EQ((*latest)->step, 20);
  auto removed = PruneCheckpoints(dir, 1);
  ASSERT_TRUE(removed.ok());
  EXPECT_EQ(*removed, std::vector<int64_t>{10});
  EXPECT_TRUE(IsDirectory(child_tmp));  // pruning leaves temp directories alone

  // The earlier checkpoint is intact.
  const auto weights = ReadCheckpointTensors(JoinPath(dir, "step_00000020"), kCheckpointWeightsFile);
  ASSERT_TRUE(weights.ok()) << weights.status().ToString();
  EXPECT_EQ((*weights)[1].second.data<float>()[0], 20.0f);

  // A new save goes through, and start-up clean-up removes the others' leftovers only.
  auto writer = CheckpointWriter::Begin(dir, 30);
  ASSERT_TRUE(writer.ok());
  auto stale = RemoveStaleTempDirs(dir);
  ASSERT_TRUE(stale.ok()) << stale.status().ToString();
  EXPECT_EQ(stale->size(), 3u);
  EXPECT_TRUE(IsDirectory((*writer)->temp_dir()));  // our own save in progress is kept
  ASSERT_TRUE((*writer)->AddJson(kCheckpointStateFile, {{"step", 30}}).ok());
  ASSERT_TRUE((*writer)->Commit().ok());
  EXPECT_EQ(Entries(dir), (std::vector<std::string>{"step_00000020", "step_00000030"}));
}

}  // namespace
}  // namespace indexcache
