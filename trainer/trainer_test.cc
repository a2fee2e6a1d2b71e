// The trainer end to end on the CPU with the tiny fixture model: the loss goes down, a resumed
// run ends bitwise equal to an uninterrupted one, non-finite steps stop the run, and an exported
// model reproduces the checkpoint's logits.
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <map>
#include <string>
#include <vector>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "core/file_util.h"
#include "data/token_array.h"
#include "model/dsa_model.h"
#include "trainer/checkpoint.h"
#include "trainer/comm.h"
#include "trainer/export.h"
#include "trainer/fs_util.h"
#include "trainer/train_config.h"
#include "trainer/trainer.h"
#include "core/test_util.h"

namespace indexcache {
namespace {

const char kModel[] = "tests/data/dsv32_moe_groups";  // 3 layers, fp32 weights

TrainConfig Config(const std::string& dir, const std::string& extra = "", const std::vector<std::string>& sets = {}) {
  const std::string text = std::string("model_dir: \"") + kModel + "\"\n" +
                           "pattern: \"FSF\"\n"
                           "data { path: \"" + kModel + "/tokens.npy\" }\n"
                           "seq_len: 24\nglobal_batch: 2\nmicro_batch: 1\nsteps: 6\n"
                           "optimizer { lr: 2e-3 beta2: 0.95 }\n"
                           "schedule { kind: \"constant\" }\n"
                           "checkpoint { dir: \"" + dir + "/ckpt\" interval: 3 keep_last: 5 }\n"
                           "log { jsonl: \"" + dir + "/metrics.jsonl\" }\n"
                           "seed: 7\n" + extra;
  auto c = ParseTrainConfig(text, "test config", sets);
  EXPECT_TRUE(c.ok()) << c.status().ToString();
  return *c;
}

std::vector<double> Losses(const std::string& jsonl) {
  std::vector<double> out;
  std::ifstream in(jsonl);
  std::string line;
  while (std::getline(in, line)) {
    const auto j = nlohmann::json::parse(line);
    if (j.contains("loss") && j["loss"].is_number()) out.push_back(j["loss"].get<double>());
  }
  return out;
}

TEST(TrainerTest, DenseAndSparseDistillationLowerTheLoss) {
  auto comm = Communicator::Create(nullptr, nullptr);
  for (const char* mode : {"DENSE", "SPARSE"}) {
    const std::string dir = MakeTempDir();
    TrainRunOptions run;
    ASSERT_TRUE(RunTraining(Config(dir, std::string("loss_mode: ") + mode + "\n"), run, *comm).ok());
    const std::vector<double> losses = Losses(dir + "/metrics.jsonl");
    ASSERT_EQ(losses.size(), 6u);
    EXPECT_LT(losses.back(), losses.front() * 0.9) << mode;
  }
}

TEST(TrainerTest, OwnLayerTargetsAreTheSingleLayerLoss) {
  // Pattern FSF: layer 0 serves layers 0 and 1. With served_layers OWN its teacher is layer 0's
  // attention alone, so the loss differs from the multi-layer one from the first step, and still
  // falls; with every layer Full the two settings are the same objective.
  auto comm = Communicator::Create(nullptr, nullptr);
  std::map<std::string, std::vector<double>> losses;
  for (const char* served : {"SERVED", "OWN"}) {
    for (const char* pattern : {"FSF", "FFF"}) {
      const std::string dir = MakeTempDir();
      const TrainConfig c = Config(dir, std::string("served_layers: ") + served + "\n", {std::string("pattern=") + pattern});
      ASSERT_TRUE(RunTraining(c, TrainRunOptions(), *comm).ok()) << served << " " << pattern;
      losses[std::string(served) + pattern] = Losses(dir + "/metrics.jsonl");
    }
  }
  EXPECT_NE(losses["SERVEDFSF"].front(), losses["OWNFSF"].front());
  EXPECT_LT(losses["OWNFSF"].back(), losses["OWNFSF"].front() * 0.9);
  EXPECT_EQ(losses["SERVEDFFF"], losses["OWNFFF"]);
}

TEST(TrainerTest, EvaluationRunsAtItsInterval) {
  auto comm = Communicator::Create(nullptr, nullptr);
  const std::string dir = MakeTempDir();
  const TrainConfig c = Config(dir, "eval_interval: 2\n", {std::string("data.eval_path=") + kModel + "/tokens.npy"});
  ASSERT_TRUE(RunTraining(c, TrainRunOptions(), *comm).ok());
  std::ifstream in(dir + "/metrics.jsonl");
  std::string line;
  std::vector<int64_t> eval_steps;
  while (std::getline(in, line)) {
    const auto j = nlohmann::json::parse(line);
    if (j.contains("eval_loss")) {
      EXPECT_GT(j["eval_loss"].get<double>(), 0.0);
      eval_steps.push_back(j["step"].get<int64_t>());
    }
  }
  EXPECT_EQ(eval_steps, (std::vector<int64_t>{2, 4, 6}));
}

TEST(TrainerTest, ResumedRunEndsBitwiseEqualToUninterruptedRun) {
  auto comm = Communicator::Create(nullptr, nullptr);
  const std::string a = MakeTempDir(), b = MakeTempDir();
  TrainRunOptions straight;
  ASSERT_TRUE(RunTraining(Config(a), straight, *comm).ok());
  TrainRunOptions first_half;
  first_half.stop_after_step = 2;  // stops off the checkpoint interval: its own checkpoint at 2
  ASSERT_TRUE(RunTraining(Config(b), first_half, *comm).ok());
  TrainRunOptions resume;
  resume.resume = true;
  const Status resumed = RunTraining(Config(b), resume, *comm);
  ASSERT_TRUE(resumed.ok()) << resumed.ToString();
  for (const char* file : {kCheckpointWeightsFile, kCheckpointOptimizerFile}) {
    EXPECT_EQ(ReadBytes(a + "/ckpt/step_00000006/" + file), ReadBytes(b + "/ckpt/step_00000006/" + file)) << file;
  }
  // And the model actually changed.
  auto trained = ReadCheckpointTensors(a + "/ckpt/step_00000006", kCheckpointWeightsFile);
  auto model = DsaModel::Load(kModel);
  ASSERT_TRUE(trained.ok() && model.ok());
  const Tensor& wk = trained->front().second;  // sorted by name: layer 0's k_norm.bias first
  EXPECT_NE(std::memcmp(wk.raw(), model->weights().layers[0].indexer.k_norm_bias.data(), wk.nbytes()), 0);
}

TEST(TrainerTest, BackendOptimizerStepEqualsTheHostAdamWBitwise) {
  // optimizer.on_host false (the default) steps on the backend (trainer/resident_optimizer.h); on
  // the CPU backend it must give exactly the host AdamW's weights, optimizer state and losses, with
  // and without clipping, with weight decay (norms and biases in the no-decay group), in both loss
  // modes, and with the model's indexers refreshed after every step (sparse mode selects with them).
  auto comm = Communicator::Create(nullptr, nullptr);
  for (const char* mode : {"DENSE", "SPARSE"}) {
    for (const char* clip : {"0", "0.05"}) {
      std::map<std::string, std::string> dirs;
      for (const char* on_host : {"true", "false"}) {
        const std::string dir = MakeTempDir();
        const TrainConfig c = Config(dir, std::string("loss_mode: ") + mode + "\n",
                                     {std::string("optimizer.on_host=") + on_host, std::string("clip_grad_norm=") + clip,
                                      "optimizer.weight_decay=0.1"});
        const Status s = RunTraining(c, TrainRunOptions(), *comm);
        ASSERT_TRUE(s.ok()) << s.ToString();
        dirs[on_host] = dir;
      }
      const std::string where = std::string(mode) + " clip " + clip;
      EXPECT_EQ(Losses(dirs["true"] + "/metrics.jsonl"), Losses(dirs["false"] + "/metrics.jsonl")) << where;
      for (const char* step : {"step_00000003", "step_00000006"}) {
        for (const char* file : {kCheckpointWeightsFile, kCheckpointOptimizerFile}) {
          EXPECT_EQ(ReadBytes(dirs["true"] + "/ckpt/" + step + "/" + file),
                    ReadBytes(dirs["false"] + "/ckpt/" + step + "/" + file))
              << where << " " << step << " " << file;
        }
      }
    }
  }
}

TEST(TrainerTest, NonFiniteStepsAreSkippedThenStopTheRun) {
  auto comm = Communicator::Create(nullptr, nullptr);
  const std::string dir = MakeTempDir();
  // An absurd learning rate drives the indexer scores to overflow within a few steps.
  TrainConfig c = Config(dir, "max_nonfinite_steps: 2\nclip_grad_norm: 0\n");
  c.mutable_optimizer()->set_lr(1e30);
  c.set_steps(50);
  const Status s = RunTraining(c, TrainRunOptions(), *comm);
  ASSERT_FALSE(s.ok());
  EXPECT_NE(s.message().find("non-finite"), std::string::npos) << s.message();
}

TEST(TrainerTest, ExportReproducesTheCheckpointsLogits) {
  auto comm = Communicator::Create(nullptr, nullptr);
  const std::string dir = MakeTempDir();
  ASSERT_TRUE(RunTraining(Config(dir), TrainRunOptions(), *comm).ok());
  const std::string ckpt = dir + "/ckpt/step_00000006";

  // The reference: the original model with the checkpoint's indexers swapped in.
  auto model = DsaModel::Load(kModel, std::string("FSF"));
  ASSERT_TRUE(model.ok());
  auto tensors = ReadCheckpointTensors(ckpt, kCheckpointWeightsFile);
  ASSERT_TRUE(tensors.ok());
  IndexerSet trained;
  for (int layer : {0, 2}) trained[layer] = model->weights().layers[layer].indexer;
  for (const auto& [name, t] : *tensors) {
    int layer = -1;
    char field[64] = {0};
    ASSERT_EQ(std::sscanf(name.c_str(), "model.layers.%d.self_attn.indexer.%63s", &layer, field), 2);
    IndexerWeights& w = trained[layer];
    float* dst = std::string(field) == "wq_b.weight" ? w.wq_b.data()
                 : std::string(field) == "wk.weight" ? w.wk.data()
                 : std::string(field) == "weights_proj.weight" ? w.weights_proj.data()
                 : std::string(field) == "k_norm.weight" ? w.k_norm_weight.data() : w.k_norm_bias.data();
    std::memcpy(dst, t.raw(), t.nbytes());
  }
  for (const auto& [layer, w] : trained) ASSERT_TRUE(model->SetIndexer(layer, w).ok());

  for (bool drop : {false, true}) {
    const std::string out = dir + (drop ? "/exported_dropped" : "/exported");
    ExportOptions options;
    options.drop_shared_indexers = drop;
    options.force = true;  // deepseek_v32: transformers would not load a dropped export; our loader does
    ASSERT_TRUE(ExportModel(kModel, trained, *IndexPattern::Parse("FSF", 3), options, out).ok());
    auto exported = DsaModel::Load(out);  // pattern from the exported config.json
    ASSERT_TRUE(exported.ok()) << exported.status().ToString();
    EXPECT_EQ(exported->pattern().ToString(), "FSF");
    auto tokens = ReadTokenArray(std::string(kModel) + "/tokens.npy", 256);
    auto want = model->Forward(tokens->Row(0));
    auto got = exported->Forward(tokens->Row(0));
    ASSERT_TRUE(want.ok() && got.ok());
    EXPECT_EQ(std::memcmp(want->logits.raw(), got->logits.raw(), want->logits.nbytes()), 0) << "drop " << drop;
    const auto cfg = nlohmann::json::parse(ReadBytes(out + "/config.json"));
    EXPECT_EQ(cfg["index_topk_pattern"], "FSF");
    EXPECT_EQ(cfg["indexer_types"], nlohmann::json({"full", "shared", "full"}));
    EXPECT_EQ(cfg["index_topk_freq"], 2);
    EXPECT_EQ(cfg["index_skip_topk_offset"], 1);
    auto ckpt_files = SafetensorsCheckpoint::Open(out);
    EXPECT_EQ(ckpt_files->Has("model.layers.1.self_attn.indexer.wk.weight"), !drop);
  }
}

// Issue 12: a failed export left OUT.tmp.<pid>/ with partial shards behind.
TEST(TrainerTest, FailedExportLeavesNothingBehind) {
  const std::string dir = MakeTempDir();
  auto model = DsaModel::Load(kModel, std::string("FSF"));
  ASSERT_TRUE(model.ok());
  IndexerSet trained;
  trained[0] = model->weights().layers[0].indexer;
  trained[0].wk = Matrix::Zero(2, 2);  // a size the checkpoint's tensor does not have
  const std::string out = dir + "/exported";
  const Status s = ExportModel(kModel, trained, *IndexPattern::Parse("FSF", 3), ExportOptions(), out);
  ASSERT_FALSE(s.ok());
  EXPECT_NE(s.message().find("wk.weight"), std::string::npos) << s.ToString();
  EXPECT_FALSE(FileExists(out) || IsDirectory(out));
  auto left = ListDirectory(dir);
  ASSERT_TRUE(left.ok());
  EXPECT_TRUE(left->empty()) << "left behind: " << left->front();
}

// Issue 12: resuming from NaN weights saved NaN checkpoints, and keep_last pruning then deleted
// the last good one. A NaN newest checkpoint is now skipped (with a warning) for the newest
// finite one, the run ends as an uninterrupted one would, and every checkpoint left is finite.
TEST(TrainerTest, ResumeSkipsANonFiniteCheckpointAndNeverSavesOne) {
  auto comm = Communicator::Create(nullptr, nullptr);
  const std::string a = MakeTempDir(), b = MakeTempDir();
  ASSERT_TRUE(RunTraining(Config(a), TrainRunOptions(), *comm).ok());
  TrainRunOptions first_half;
  first_half.stop_after_step = 2;
  ASSERT_TRUE(RunTraining(Config(b, "", {"checkpoint.keep_last=1"}), first_half, *comm).ok());
  // A poisoned step 3: step 2's parts relabelled, with a NaN weight.
  const std::string two = b + "/ckpt/step_00000002";
  auto weights = ReadCheckpointTensors(two, kCheckpointWeightsFile);
  auto optimizer = ReadCheckpointTensors(two, kCheckpointOptimizerFile);
  auto state = ReadCheckpointJson(two, kCheckpointStateFile);
  ASSERT_TRUE(weights.ok() && optimizer.ok() && state.ok());
  CheckpointContents poisoned;
  NamedTensors w;
  for (const auto& [name, t] : *weights) {
    Tensor copy = Tensor::Zeros(t.dtype(), t.shape());
    std::memcpy(copy.raw(), t.raw(), t.nbytes());
    w.emplace_back(name, copy);
  }
  w.front().second.data<float>()[0] = NAN;
  poisoned.tensors[kCheckpointWeightsFile] = w;
  poisoned.tensors[kCheckpointOptimizerFile] = *optimizer;
  poisoned.tensor_metadata = {{"step", "3"}, {"adamw.step", std::to_string((*state)["adamw_step"].get<int64_t>())}};
  (*state)["step"] = 3;
  poisoned.json[kCheckpointStateFile] = *state;
  ASSERT_TRUE(WriteCheckpoint(b + "/ckpt", 3, poisoned).ok());

  TrainRunOptions resume;
  resume.resume = true;
  const Status resumed = RunTraining(Config(b, "", {"checkpoint.keep_last=1"}), resume, *comm);
  ASSERT_TRUE(resumed.ok()) << resumed.ToString();
  for (const char* file : {kCheckpointWeightsFile, kCheckpointOptimizerFile}) {
    EXPECT_EQ(ReadBytes(a + "/ckpt/step_00000006/" + file), ReadBytes(b + "/ckpt/step_00000006/" + file)) << file;
  }
  auto left = ListCheckpoints(b + "/ckpt");
  ASSERT_TRUE(left.ok());
  for (const CheckpointInfo& ck : *left) {
    auto t = ReadCheckpointTensors(ck.path, kCheckpointWeightsFile);
    ASSERT_TRUE(t.ok());
    for (const auto& [name, tensor] : *t) {
      for (int64_t i = 0; i < tensor.numel(); ++i) ASSERT_TRUE(std::isfinite(tensor.data<float>()[i])) << ck.path << " " << name;
    }
  }
}

}  // namespace
}  // namespace indexcache
