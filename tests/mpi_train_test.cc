// Data parallelism through the real binary under mpirun: two ranks with the same global batch
// train the same weights as one rank, and a failing rank ends the whole job with a non-zero exit
// instead of leaving the other rank waiting.
#include <sys/wait.h>

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <string>

#include <gtest/gtest.h>

#include "core/file_util.h"
#include "trainer/checkpoint.h"
#include "core/test_util.h"

namespace indexcache {
namespace {

const char kTrain[] =
    "tools/indexcache train --config configs/distill_tiny.textproto --set steps=4 --set log.tensorboard_dir= "
    "--set log.jsonl= ";

std::string Mpirun(int ranks) {
  return "mpirun --allow-run-as-root --oversubscribe -np " + std::to_string(ranks) + " ";
}

TEST(MpiTrainTest, TwoRanksTrainWhatOneRankTrains) {
  const std::string dir = MakeTempDir();
  std::string out1, out2;
  ASSERT_EQ(RunShell(std::string(kTrain) + "--set checkpoint.dir=" + dir + "/one", &out1), 0) << out1;
  ASSERT_EQ(RunShell(Mpirun(2) + kTrain + "--set checkpoint.dir=" + dir + "/two", &out2), 0) << out2;
  EXPECT_NE(out2.find("(2 ranks)"), std::string::npos) << out2;
  auto one = ReadCheckpointTensors(dir + "/one/step_00000004", kCheckpointWeightsFile);
  auto two = ReadCheckpointTensors(dir + "/two/step_00000004", kCheckpointWeightsFile);
  ASSERT_TRUE(one.ok() && two.ok());
  ASSERT_EQ(one->size(), two->size());
  double max_rel = 0;
  for (size_t i = 0; i < one->size(); ++i) {
    ASSERT_EQ((*one)[i].first, (*two)[i].first);
    const Tensor &a = (*one)[i].second, &b = (*two)[i].second;
    ASSERT_EQ(a.shape(), b.shape());
    for (int64_t j = 0; j < a.numel(); ++j) {
      const double x = a.data<float>()[j], y = b.data<float>()[j];
      max_rel = std::max(max_rel, std::fabs(x - y) / std::max(1e-3, std::fabs(x)));
    }
  }
  // The only difference is the order in which the two ranks' gradient sums are added.
  EXPECT_LE(max_rel, 1e-4);
  std::printf("max relative difference, 2 ranks vs 1 rank, after 4 steps: %.3e\n", max_rel);
}

TEST(MpiTrainTest, AFailingRankEndsTheJob) {
  const std::string dir = MakeTempDir();
  std::string out;
  const int rc = RunShell("env INDEXCACHE_TEST_FAIL_RANK=1 " + Mpirun(2) + kTrain + "--set checkpoint.dir=" + dir, &out);
  EXPECT_NE(rc, 0) << out;
  EXPECT_NE(rc, 124) << "the job hung until the timeout:\n" << out;
  EXPECT_NE(out.find("[rank 1]"), std::string::npos) << out;
  EXPECT_NE(out.find("injected failure"), std::string::npos) << out;
}

}  // namespace
}  // namespace indexcache
