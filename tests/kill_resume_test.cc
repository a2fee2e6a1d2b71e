// SIGKILL at random moments (most of them inside a checkpoint save, since the run saves every
// step), then --resume until the run completes: the final weights, optimizer state and metrics
// must equal an uninterrupted run's, bit for bit, with no temp directory left behind
// (issue 12: stale .tmp_step_* directories stayed forever; metrics.jsonl repeated steps).
#include <fcntl.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "core/file_util.h"
#include "core/test_util.h"
#include "trainer/checkpoint.h"
#include "trainer/fs_util.h"

namespace indexcache {
namespace {

constexpr int kSteps = 12;

std::vector<std::string> TrainArgs(const std::string& dir) {
  return {"tools/indexcache", "train", "--config", "configs/distill_tiny.textproto",
          "--set", "steps=" + std::to_string(kSteps), "--set", "checkpoint.interval=1",
          "--set", "checkpoint.keep_last=2", "--set", "checkpoint.dir=" + dir + "/ckpt",
          "--set", "log.jsonl=" + dir + "/metrics.jsonl", "--set", "log.tensorboard_dir=", "--resume"};
}

pid_t Spawn(const std::vector<std::string>& args, const std::string& log) {
  const pid_t pid = fork();
  if (pid == 0) {
    const int fd = ::open(log.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0644);
    if (fd >= 0) {
      dup2(fd, 1);
      dup2(fd, 2);
    }
    std::vector<char*> argv;
    for (const std::string& a : args) argv.push_back(const_cast<char*>(a.c_str()));
    argv.push_back(nullptr);
    execv(argv[0], argv.data());
    _exit(127);
  }
  return pid;
}

// Runs to completion; returns the exit code (128 + signal when killed by one).
int Wait(pid_t pid) {
  int status = 0;
  waitpid(pid, &status, 0);
  return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

// The "step" and "loss" of every line (timings differ from run to run).
std::vector<std::pair<int64_t, double>> Metrics(const std::string& path) {
  std::vector<std::pair<int64_t, double>> out;
  const std::string text = ReadBytes(path);
  size_t begin = 0;
  while (begin < text.size()) {
    const size_t end = text.find('\n', begin);
    const auto j = nlohmann::json::parse(text.substr(begin, end - begin));
    out.emplace_back(j["step"].get<int64_t>(), j.value("loss", 0.0));
    begin = end == std::string::npos ? text.size() : end + 1;
  }
  return out;
}

TEST(KillResumeTest, KilledRunsResumeToTheUninterruptedResult) {
  const std::string root = MakeTempDir();
  const std::string ref = root + "/ref";
  const auto t0 = std::chrono::steady_clock::now();
  ASSERT_EQ(Wait(Spawn(TrainArgs(ref), root + "/ref.log")), 0) << ReadBytes(root + "/ref.log");
  const int64_t run_ms =
      std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - t0).count();
  const std::string final_step = "/ckpt/" + CheckpointDirName(kSteps) + "/";
  const auto ref_metrics = Metrics(ref + "/metrics.jsonl");
  ASSERT_EQ(ref_metrics.size(), static_cast<size_t>(kSteps));

  std::mt19937 rng(12);
  int kills = 0;
  for (int trial = 0; trial < 4; ++trial) {
    SCOPED_TRACE("trial " + std::to_string(trial));
    const std::string dir = root + "/trial" + std::to_string(trial);
    const std::string log = dir + ".log";
    // Up to three kills at random moments of a run, then one run to the end.
    for (int k = 0; k < 3; ++k) {
      const pid_t pid = Spawn(TrainArgs(dir), log);
      std::this_thread::sleep_for(std::chrono::milliseconds(std::uniform_int_distribution<int64_t>(5, run_ms)(rng)));
      ::kill(pid, SIGKILL);
      const int rc = Wait(pid);
      ASSERT_TRUE(rc == 0 || rc == 128 + SIGKILL) << "exit " << rc << "\n" << ReadBytes(log);
      kills += rc != 0;
    }
    ASSERT_EQ(Wait(Spawn(TrainArgs(dir), log)), 0) << ReadBytes(log);
    for (const char* file : {kCheckpointWeightsFile, kCheckpointOptimizerFile}) {
      EXPECT_EQ(ReadBytes(dir + final_step + file), ReadBytes(ref + final_step + file)) << file << " differs";
    }
    auto left = ListDirectory(dir + "/ckpt");
    ASSERT_TRUE(left.ok());
    for (const std::string& name : *left) EXPECT_NE(name.rfind(".tmp_", 0), 0u) << "left behind: " << name;
    EXPECT_EQ(Metrics(dir + "/metrics.jsonl"), ref_metrics) << "metrics.jsonl repeats or misses steps";
  }
  std::printf("%d runs killed (reference run %lld ms)\n", kills, static_cast<long long>(run_ms));
}

}  // namespace
}  // namespace indexcache
