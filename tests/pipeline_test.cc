// Pipeline x data parallelism through the real binary under mpirun, on an 8-layer random model
// built here: eval and search split over pipeline stages give the same JSON as one rank (also
// with 3 stages that each begin with a Shared layer, whose top-k comes from an earlier stage);
// training on 2 stages x 2 replicas gives one rank's losses and indexer weights.
#include <sys/wait.h>

#include <cmath>
#include <cstdio>
#include <fstream>
#include <random>
#include <string>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "core/npy.h"
#include "core/test_util.h"
#include "model/config.h"
#include "model/model_writer.h"
#include "model/random_weights.h"
#include "trainer/checkpoint.h"

namespace indexcache {
namespace {

const char kBinary[] = "tools/indexcache";

int RunShell(const std::string& cmd, std::string* output) {
  FILE* pipe = popen(("timeout 120 " + cmd + " 2>&1").c_str(), "r");
  if (!pipe) return -1;
  char buf[4096];
  size_t n;
  while ((n = fread(buf, 1, sizeof(buf), pipe)) > 0) output->append(buf, n);
  const int status = pclose(pipe);
  return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

std::string Mpirun(int ranks) {
  return "mpirun --allow-run-as-root --oversubscribe -np " + std::to_string(ranks) + " ";
}

// An 8-layer deepseek_v32 model (dense MLPs, index_topk 8 < 24-token windows so sparsity
// matters) with random weights, and 8 rows of 48 random tokens.
class PipelineTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = new std::string(MakeTempDir("pipeline"));
    const nlohmann::json config = {
        {"model_type", "deepseek_v32"}, {"vocab_size", 96},          {"hidden_size", 32},
        {"num_hidden_layers", 8},       {"num_attention_heads", 2},  {"q_lora_rank", 16},
        {"kv_lora_rank", 16},           {"qk_nope_head_dim", 8},     {"qk_rope_head_dim", 8},
        {"v_head_dim", 8},              {"index_topk", 8},           {"index_n_heads", 2},
        {"index_head_dim", 16},         {"intermediate_size", 48},   {"first_k_dense_replace", 8},
        {"rope_theta", 10000.0},        {"max_position_embeddings", 256}, {"tie_word_embeddings", false},
    };
    auto parsed = ParseModelConfig(config, "pipeline test config");
    ASSERT_TRUE(parsed.ok()) << parsed.status().message();
    ASSERT_TRUE(WriteModelDirectory(model(), config, RandomModelWeights(*parsed, 5)).ok());
    Tensor tokens = Tensor::Zeros(DType::kI32, {8, 48});
    std::mt19937 rng(3);
    for (int64_t i = 0; i < tokens.numel(); ++i) tokens.data<int32_t>()[i] = static_cast<int32_t>(rng() % 96);
    ASSERT_TRUE(WriteNpy(data(), tokens).ok());
  }
  static std::string model() { return *dir_ + "/model"; }
  static std::string data() { return *dir_ + "/tokens.npy"; }
  static std::string Scratch() { return MakeTempDir("run"); }
  static std::string* dir_;
};
std::string* PipelineTest::dir_ = nullptr;

TEST_F(PipelineTest, EvalOnTwoStagesEqualsOneRank) {
  const std::string out = Scratch();
  const std::string eval = std::string(kBinary) + " eval --model " + model() + " --data " + data() +
                           " --seq-len 24 --patterns all,1/2,FSSSFSSS --bucket 8 --out ";
  std::string log1, log2;
  ASSERT_EQ(RunShell(eval + out + "/one.json", &log1), 0) << log1;
  ASSERT_EQ(RunShell(Mpirun(2) + eval + out + "/two.json --pipeline-stages 2", &log2), 0) << log2;
  EXPECT_EQ(ReadBytes(out + "/one.json"), ReadBytes(out + "/two.json"));
}

TEST_F(PipelineTest, EvalOnThreeStagesThatBeginWithSharedLayersEqualsOneRank) {
  // Stages [0,3) [3,6) [6,8) under FSSSFSSS: layer 3 reuses layer 0's top-k (stage 0) and layer 6
  // layer 4's (stage 1): the indices buffer must travel with the stream.
  const std::string out = Scratch();
  const std::string eval = std::string(kBinary) + " eval --model " + model() + " --data " + data() +
                           " --seq-len 24 --pattern FSSSFSSS --out ";
  std::string log1, log3;
  ASSERT_EQ(RunShell(eval + out + "/one.json", &log1), 0) << log1;
  ASSERT_EQ(RunShell(Mpirun(3) + eval + out + "/three.json --pipeline-stages 3 --stage-boundaries 3,6", &log3), 0)
      << log3;
  EXPECT_EQ(ReadBytes(out + "/one.json"), ReadBytes(out + "/three.json"));
}

TEST_F(PipelineTest, SearchOnTwoStagesAndOnTwoStagesTimesTwoReplicasEqualsOneRank) {
  const std::string out = Scratch();
  const std::string search = std::string(kBinary) + " search --model " + model() + " --data " + data() +
                             " --seq-len 24 --target 1/4 --refine --out ";
  std::string log1, log2, log4;
  ASSERT_EQ(RunShell(search + out + "/one.json", &log1), 0) << log1;
  ASSERT_EQ(RunShell(Mpirun(2) + search + out + "/two.json --pipeline-stages 2 --stage-boundaries 3", &log2), 0) << log2;
  ASSERT_EQ(RunShell(Mpirun(4) + search + out + "/four.json --pipeline-stages 2", &log4), 0) << log4;
  const std::string one = ReadBytes(out + "/one.json");
  EXPECT_EQ(one, ReadBytes(out + "/two.json"));
  EXPECT_EQ(one, ReadBytes(out + "/four.json"));
}

class PipelineTrainTest : public PipelineTest {
 protected:
  // A config for the fixture: pattern FSFSSFSS (Full layers 0, 2, 5), 8 sequences per step.
  static std::string Config(const std::string& run) {
    const std::string path = run + "/train.textproto";
    std::ofstream(path) << "model_dir: \"" << model() << "\"\npattern: \"FSFSSFSS\"\ndata { path: \"" << data()
                        << "\" }\nseq_len: 24\nglobal_batch: 8\nmicro_batch: 2\nsteps: 3\noptimizer { lr: 1e-2 }\n"
                        << "checkpoint { dir: \"" << run << "/ckpt\" }\nlog { jsonl: \"" << run << "/log.jsonl\" }\n";
    return std::string(kBinary) + " train --config " + path;
  }
  static std::vector<double> Losses(const std::string& run) {
    std::vector<double> losses;
    std::ifstream in(run + "/log.jsonl");
    std::string line;
    while (std::getline(in, line)) {
      const auto j = nlohmann::json::parse(line);
      if (j.contains("loss")) losses.push_back(j["loss"].get<double>());
    }
    return losses;
  }
  // Largest relative difference of the final indexer weights (every tensor must match by name).
  static double MaxRelativeDifference(const std::string& a_run, const std::string& b_run) {
    auto a = ReadCheckpointTensors(a_run + "/ckpt/step_00000003", kCheckpointWeightsFile);
    auto b = ReadCheckpointTensors(b_run + "/ckpt/step_00000003", kCheckpointWeightsFile);
    EXPECT_TRUE(a.ok() && b.ok());
    if (!a.ok() || !b.ok()) return 1.0;
    EXPECT_EQ(a->size(), b->size());
    double max_rel = 0.0;
    for (size_t i = 0; i < a->size() && i < b->size(); ++i) {
      EXPECT_EQ((*a)[i].first, (*b)[i].first);
      const Tensor &x = (*a)[i].second, &y = (*b)[i].second;
      EXPECT_EQ(x.shape(), y.shape());
      for (int64_t j = 0; j < x.numel() && x.shape() == y.shape(); ++j) {
        const double u = x.data<float>()[j], v = y.data<float>()[j];
        max_rel = std::max(max_rel, std::fabs(u - v) / std::max(1e-3, std::fabs(u)));
      }
    }
    return max_rel;
  }
};

TEST_F(PipelineTrainTest, TwoStagesTrainBitwiseWhatOneRankTrains) {
  const std::string one = Scratch(), two = Scratch();
  std::string log1, log2;
  ASSERT_EQ(RunShell(Config(one), &log1), 0) << log1;
  ASSERT_EQ(RunShell(Mpirun(2) + Config(two) + " --set parallel.pipeline_stages=2", &log2), 0) << log2;
  EXPECT_NE(log2.find("pipeline: 2 stages x 1 replicas, layers [0, 5) [5, 8)"), std::string::npos) << log2;
  EXPECT_NE(log2.find("fill/drain"), std::string::npos) << log2;
  // Each Full layer's gradient sums the same sequences in the same order on its stage.
  EXPECT_EQ(MaxRelativeDifference(one, two), 0.0);
  const std::vector<double> a = Losses(one), b = Losses(two);
  ASSERT_EQ(a.size(), 3u);
  ASSERT_EQ(b.size(), 3u);
  for (size_t i = 0; i < a.size(); ++i) EXPECT_NEAR(a[i], b[i], 1e-12 * std::fabs(a[i])) << "step " << i + 1;
}

TEST_F(PipelineTrainTest, TwoStagesTimesTwoReplicasTrainWhatOneRankTrains) {
  const std::string one = Scratch(), four = Scratch();
  std::string log1, log4;
  ASSERT_EQ(RunShell(Config(one), &log1), 0) << log1;
  ASSERT_EQ(RunShell(Mpirun(4) + Config(four) + " --set parallel.pipeline_stages=2", &log4), 0) << log4;
  EXPECT_NE(log4.find("pipeline: 2 stages x 2 replicas"), std::string::npos) << log4;
  const double max_rel = MaxRelativeDifference(one, four);
  std::printf("max relative difference of the indexer weights, 2 x 2 ranks vs 1 rank, after 3 steps: %.3e\n", max_rel);
  // The replicas' fp32 gradient sums are added in another order than one rank adds them; AdamW's
  // normalised step keeps that rounding (~1e-7 relative per gradient) at the 1e-6 level.
  EXPECT_LE(max_rel, 1e-5);
  const std::vector<double> a = Losses(one), b = Losses(four);
  ASSERT_EQ(a.size(), b.size());
  for (size_t i = 0; i < a.size(); ++i) EXPECT_NEAR(a[i], b[i], 1e-6 * std::fabs(a[i])) << "step " << i + 1;
}

TEST_F(PipelineTrainTest, ASplitSeparatingAFullLayerFromItsSharedLayersIsRejected) {
  const std::string run = Scratch();
  std::string log;
  const int rc = RunShell(Mpirun(2) + Config(run) + " --set parallel.pipeline_stages=2 --set parallel.stage_boundaries=4",
                          &log);
  EXPECT_NE(rc, 0) << log;
  EXPECT_NE(rc, 124) << "the job hung until the timeout:\n" << log;
  EXPECT_NE(log.find("parallel.stage_boundaries"), std::string::npos) << log;
  EXPECT_NE(log.find("Shared layer 4"), std::string::npos) << log;
}

}  // namespace
}  // namespace indexcache
