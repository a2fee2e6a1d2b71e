// The pattern search's prefix cache on the GPU: a candidate scored from device-resident
// activations equals a full forward of the same pattern on the GPU (exactly: same kernels, same
// inputs), a cache spilled to host memory gives the same scores, and the GPU's losses agree with
// the CPU reference within bf16 tolerance. Skips without a GPU.
#include <cmath>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "core/cuda_check.h"
#include "data/token_array.h"
#include "kernels/tolerances.h"
#include "model/dsa_model.h"
#include "search/prefix_cache.h"

namespace indexcache {
namespace {

const char kGentle[] = "tests/data/dsv32_gentle_bf16";  // 4 layers, 96 tokens, top-k 32

double Total(const std::vector<double>& v) {
  double s = 0;
  for (double x : v) s += x;
  return s;
}

TEST(GpuSearchTest, DeviceCacheScoresEqualFullForwards) {
  if (!CudaDeviceAvailable()) GTEST_SKIP() << "no CUDA device";
  auto gpu = DsaModel::Load(kGentle, std::nullopt, "cuda");
  auto cpu = DsaModel::Load(kGentle, std::nullopt, "cpu");
  ASSERT_TRUE(gpu.ok() && cpu.ok());
  auto tokens = ReadTokenArray(std::string(kGentle) + "/tokens.npy", gpu->config().vocab_size);
  ASSERT_TRUE(tokens.ok());
  const std::vector<std::vector<int32_t>> seqs = {tokens->Row(0)};
  PrefixCache on_device(&*gpu, seqs), on_host(&*gpu, seqs, /*device_budget_bytes=*/0), reference(&*cpu, seqs);
  const IndexPattern all = IndexPattern::AllFull(4);
  ASSERT_TRUE(on_device.Commit(all, 0).ok());
  ASSERT_TRUE(on_host.Commit(all, 0).ok());
  ASSERT_TRUE(reference.Commit(all, 0).ok());
  EXPECT_GT(on_device.device_bytes(), 0);
  EXPECT_EQ(on_host.device_bytes(), 0);
  EXPECT_GT(on_host.host_bytes(), 0);
  for (int l = 1; l < 4; ++l) {
    std::string p = "FFFF";
    p[l] = 'S';
    const IndexPattern q = *IndexPattern::Parse(p, 4);
    auto cached = on_device.Score(q, l), spilled = on_host.Score(q, l), full = on_device.Score(q, 0),
         ref = reference.Score(q, l);
    ASSERT_TRUE(cached.ok() && spilled.ok() && full.ok() && ref.ok()) << cached.status().message();
    EXPECT_EQ(Total(*cached), Total(*full)) << p;
    EXPECT_EQ(Total(*spilled), Total(*cached)) << p;
    EXPECT_NEAR(Total(*cached), Total(*ref), kParityRelL2Bf16 * Total(*ref)) << p;
  }
}

}  // namespace
}  // namespace indexcache
