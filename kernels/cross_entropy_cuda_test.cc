// CrossEntropyRowsCuda against CrossEntropyRowsCpu (fp64) on odd shapes: vocabularies smaller than
// a block, not a multiple of the block, and production-sized; logits of a wide range so the max
// shift matters; a NaN row must come back NaN. Skips without a CUDA device (CI has none).
#include "kernels/cross_entropy_cuda.h"

#include <cmath>
#include <random>
#include <string>
#include <vector>

#include "core/cuda_check.h"
#include "core/device_buffer.h"
#include "gtest/gtest.h"
#include "kernels/cross_entropy.h"
#include "kernels/tolerances.h"

namespace indexcache {
namespace {

struct Shape {
  int64_t rows, vocab;
};

class CrossEntropyCudaTest : public ::testing::TestWithParam<Shape> {};

TEST_P(CrossEntropyCudaTest, MatchesCpuReference) {
  if (!CudaDeviceAvailable()) GTEST_SKIP() << "no CUDA device";
  const Shape s = GetParam();
  std::mt19937 rng(static_cast<uint32_t>(s.rows * 7919 + s.vocab));
  std::normal_distribution<float> normal(0.f, 4.f);
  std::vector<float> logits(s.rows * s.vocab);
  // An offset that a missing max shift would overflow in fp32 exp, and a rising trend so that the
  // running max grows along the row (every rescale path runs).
  for (size_t i = 0; i < logits.size(); ++i) logits[i] = normal(rng) + 30.f + 0.002f * static_cast<float>(i % s.vocab);
  std::vector<int32_t> targets(s.rows);
  for (auto& t : targets) t = static_cast<int32_t>(rng() % s.vocab);
  std::vector<double> ref(s.rows), got(s.rows);
  CrossEntropyRowsCpu(logits.data(), targets.data(), s.rows, s.vocab, ref.data());

  DeviceBuffer<float> dl(logits.size());
  DeviceBuffer<int32_t> dt(targets.size());
  DeviceBuffer<double> dn(ref.size());
  dl.CopyFrom(logits.data());
  dt.CopyFrom(targets.data());
  CrossEntropyRowsCuda(dl.ptr, dt.ptr, s.rows, s.vocab, dn.ptr, nullptr);
  dn.CopyTo(got.data());
  for (int64_t r = 0; r < s.rows; ++r) {
    EXPECT_NEAR(got[r], ref[r], kCrossEntropyAbsTol * std::max(1.0, std::fabs(ref[r]))) << "row " << r;
  }
}

INSTANTIATE_TEST_SUITE_P(Shapes, CrossEntropyCudaTest,
                         // 3 x 17 and 17 x 257: rows start at every alignment (the float4
                                         // body's scalar head and tail).
                         ::testing::Values(Shape{1, 1}, Shape{3, 17}, Shape{17, 257}, Shape{7, 1031}, Shape{33, 8192},
                                           Shape{5, 129280}),
                         [](const ::testing::TestParamInfo<Shape>& info) {
                           return std::to_string(info.param.rows) + "x" + std::to_string(info.param.vocab);
                         });

TEST(CrossEntropyCuda, NonFiniteRowStaysNonFinite) {
  if (!CudaDeviceAvailable()) GTEST_SKIP() << "no CUDA device";
  const int64_t vocab = 300;
  std::vector<float> logits(2 * vocab, 1.f);
  logits[vocab + 123] = std::nanf("");
  const std::vector<int32_t> targets = {5, 7};
  DeviceBuffer<float> dl(logits.size());
  DeviceBuffer<int32_t> dt(2);
  DeviceBuffer<double> dn(2);
  dl.CopyFrom(logits.data());
  dt.CopyFrom(targets.data());
  CrossEntropyRowsCuda(dl.ptr, dt.ptr, 2, vocab, dn.ptr, nullptr);
  double got[2];
  dn.CopyTo(got);
  EXPECT_NEAR(got[0], std::log(300.0), 1e-6);
  EXPECT_TRUE(std::isnan(got[1]));
}

}  // namespace
}  // namespace indexcache
