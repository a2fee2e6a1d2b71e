// `indexcache plan` and config-only `indexcache info` through the real binary, on the shipped
// real-model configs: the JSON has the documented fields and adds up; an impossible fit and bad
// flags are one line each with exit code 1.
#include <string>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "core/test_util.h"

namespace indexcache {
namespace {

using json = nlohmann::json;

struct Result {
  int exit_code = -1;
  std::string out;  // stdout only, or stdout + stderr
};

Result RunIndexcache(const std::string& args, bool with_stderr) {
  Result r;
  r.exit_code = RunShell("tools/indexcache " + args, &r.out, 60, with_stderr);
  return r;
}

void ExpectOneLineError(const std::string& args, const std::string& fragment) {
  const Result r = RunIndexcache(args, true);
  EXPECT_EQ(r.exit_code, 1) << args << "\n" << r.out;
  EXPECT_EQ(r.out.find('\n'), r.out.size() - 1) << "not one line: " << r.out;
  EXPECT_NE(r.out.find(fragment), std::string::npos) << "missing '" << fragment << "' in: " << r.out;
}

TEST(PlanCli, JsonHasTheStagesAndAddsUp) {
  const Result r = RunIndexcache("plan --model configs/models/deepseek_v32 --gpus 16 --seq-len 32768 --json", false);
  ASSERT_EQ(r.exit_code, 0) << r.out;
  const json j = json::parse(r.out);
  EXPECT_EQ(j["pipeline_stages"].get<int>() * j["data_parallel"].get<int>(), 16);
  ASSERT_EQ(j["stages"].size(), j["pipeline_stages"].get<size_t>());
  int next = 0;
  for (const json& s : j["stages"]) {
    EXPECT_EQ(s["layers"][0].get<int>(), next);
    next = s["layers"][1].get<int>() + 1;
    EXPECT_GT(s["weight_bytes"].get<int64_t>(), 0);
    EXPECT_GT(s["workspace_bytes"].get<int64_t>(), 0);
    EXPECT_LE(s["weight_bytes"].get<int64_t>() + s["workspace_bytes"].get<int64_t>(), 141'000'000'000);
  }
  EXPECT_EQ(next, 61);
  EXPECT_GT(j["step_time_s"].get<double>(), 0);
  EXPECT_GT(j["pipeline_efficiency"].get<double>(), 0);
  EXPECT_FALSE(j["estimated_from"].empty());
}

TEST(PlanCli, TextNamesStagesAndSources) {
  const Result r = RunIndexcache("plan --model configs/models/glm5 --gpus 8 --seq-len 16384 --mode train --pattern 1/4", false);
  ASSERT_EQ(r.exit_code, 0) << r.out;
  EXPECT_NE(r.out.find("pipeline stages"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("stages begin only at Full layers"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("estimated from"), std::string::npos) << r.out;
}

TEST(PlanCli, ImpossibleFitIsOneLineExitOne) {
  ExpectOneLineError("plan --model configs/models/deepseek_v32 --gpus 2 --seq-len 131072", "does not fit on 2 GPUs");
  ExpectOneLineError("plan --model configs/models/glm5 --gpus 8 --seq-len 8192 --gpu-mem-gb 80", "does not fit on 8 GPUs");
}

TEST(PlanCli, BadFlagsAreOneLineExitOne) {
  ExpectOneLineError("plan --model configs/models/deepseek_v32 --gpus 0 --seq-len 8192", "--gpus");
  ExpectOneLineError("plan --model configs/models/deepseek_v32 --gpus 8 --seq-len 99999999999", "--seq-len");
  ExpectOneLineError("plan --model configs/models/deepseek_v32 --gpus 8 --seq-len 8192 --mode fly", "--mode");
  ExpectOneLineError("plan --model configs/models/deepseek_v32 --gpus 8 --seq-len 8192 --pipeline-stages 3",
                     "--pipeline-stages");
  ExpectOneLineError("plan --model configs/models/deepseek_v32 --gpus 8 --seq-len 8192 --gpu-mem-gb lots", "--gpu-mem-gb");
  ExpectOneLineError("plan --model configs/models/deepseek_v32 --gpus 8 --seq-len 8192 --gpu a100", "--gpu");
  ExpectOneLineError("plan --model /nonexistent --gpus 8 --seq-len 8192", "/nonexistent");
}

TEST(InfoCli, ConfigOnlyDirectoryCountsParametersFromTheConfig) {
  const Result r = RunIndexcache("info --model configs/models/deepseek_v32 --json", false);
  ASSERT_EQ(r.exit_code, 0) << r.out;
  const json j = json::parse(r.out);
  EXPECT_NEAR(j["parameters"].get<double>() / 1e9, 671.9, 0.5);
  EXPECT_EQ(j["num_layers"], 61);
  EXPECT_TRUE(j["fp8"].get<bool>());
  EXPECT_NE(j["parameters_from"].get<std::string>().find("config.json"), std::string::npos);
  // --config-only on a directory with weights gives the same count as its headers.
  const Result headers = RunIndexcache("info --model tests/data/dsv32_yarn_fp8 --json", false);
  const Result config = RunIndexcache("info --model tests/data/dsv32_yarn_fp8 --config-only --json", false);
  ASSERT_EQ(headers.exit_code, 0);
  ASSERT_EQ(config.exit_code, 0);
  EXPECT_EQ(json::parse(headers.out)["parameters"], json::parse(config.out)["parameters"]);
}

}  // namespace
}  // namespace indexcache
