// SumOfSquaresCuda (fp64 and fp32) against SumOfSquares, run-to-run determinism, accumulation over
// several buffers against GlobalGradNorm, and ScaleGradientCuda against ScaleInPlace, on random odd
// sizes. Skips without a CUDA device (CI has none).
#include "optim/clip_cuda.h"

#include <cmath>
#include <cstdint>
#include <cstring>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "core/cuda_check.h"
#include "core/device_buffer.h"
#include "core/test_util.h"
#include "gtest/gtest.h"
#include "kernels/tolerances.h"
#include "optim/clip.h"

namespace indexcache {
namespace {

constexpr int64_t kSizes[] = {17, 127, 281, 100003};

std::vector<float> Random(int64_t n, uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> normal(0.f, 0.3f);
  std::vector<float> v(n);
  for (float& x : v) x = normal(rng);
  return v;
}

template <typename Acc>
Acc DeviceSumOfSquares(const DeviceBuffer<float>& x, DeviceBuffer<Acc>* out, DeviceBuffer<Acc>* work) {
  SumOfSquaresCuda<Acc>(x.ptr, static_cast<int64_t>(x.size()), out->ptr, work->ptr, false, nullptr);
  return out->ToHost()[0];
}

TEST(ClipCudaTest, SumOfSquaresMatchesCpu) {
  if (!CudaDeviceAvailable()) GTEST_SKIP() << "no CUDA device";
  DeviceBuffer<double> out64(1), work64(kSumOfSquaresWorkspace);
  DeviceBuffer<float> out32(1), work32(kSumOfSquaresWorkspace);
  for (int64_t n : kSizes) {
    const std::vector<float> x = Random(n, static_cast<uint32_t>(n));
    const double want = SumOfSquares(x.data(), n);
    DeviceBuffer<float> dx(n);
    dx.CopyFrom(x);
    const double got64 = DeviceSumOfSquares(dx, &out64, &work64);
    const float got32 = DeviceSumOfSquares(dx, &out32, &work32);
    EXPECT_LE(std::abs(got64 - want) / want, 1e-12) << "fp64, n=" << n;
    EXPECT_LE(std::abs(got32 - want) / want, kRelL2TolF32) << "fp32, n=" << n;
    // Bitwise the same on a second run.
    const double again64 = DeviceSumOfSquares(dx, &out64, &work64);
    const float again32 = DeviceSumOfSquares(dx, &out32, &work32);
    EXPECT_EQ(std::memcmp(&again64, &got64, sizeof(double)), 0) << "n=" << n;
    EXPECT_EQ(std::memcmp(&again32, &got32, sizeof(float)), 0) << "n=" << n;
  }
}

TEST(ClipCudaTest, LargeBufferUsesEveryBlockDeterministically) {
  if (!CudaDeviceAvailable()) GTEST_SKIP() << "no CUDA device";
  // Larger than kSumOfSquaresWorkspace blocks' worth, so the grid is capped and threads loop.
  const int64_t n = 20000003;
  const std::vector<float> x = Random(n, 99);
  DeviceBuffer<float> dx(n);
  dx.CopyFrom(x);
  DeviceBuffer<double> out(1), work(kSumOfSquaresWorkspace);
  const double want = SumOfSquares(x.data(), n);
  const double got = DeviceSumOfSquares(dx, &out, &work);
  EXPECT_LE(std::abs(got - want) / want, 1e-12);
  for (int i = 0; i < 3; ++i) EXPECT_EQ(DeviceSumOfSquares(dx, &out, &work), got);
}

TEST(ClipCudaTest, AccumulatesAcrossBuffersToTheGlobalNorm) {
  if (!CudaDeviceAvailable()) GTEST_SKIP() << "no CUDA device";
  std::vector<std::vector<float>> host;
  std::vector<FloatSpan> spans;
  for (int64_t n : kSizes) host.push_back(Random(n, static_cast<uint32_t>(n + 1)));
  for (auto& h : host) spans.push_back({h.data(), static_cast<int64_t>(h.size())});
  DeviceBuffer<double> out(1), work(kSumOfSquaresWorkspace);
  std::vector<DeviceBuffer<float>> device;  // move-only buffers, held by value
  for (size_t i = 0; i < host.size(); ++i) {
    device.emplace_back(host[i].size());
    device.back().CopyFrom(host[i]);
    SumOfSquaresCuda<double>(device.back().ptr, static_cast<int64_t>(host[i].size()), out.ptr, work.ptr,
                             /*accumulate=*/i > 0, nullptr);
  }
  const double norm = std::sqrt(out.ToHost()[0]);
  const double want = GlobalGradNorm(spans);
  EXPECT_LE(std::abs(norm - want) / want, 1e-12);

  // Clip to a quarter of the norm with the same coefficient on both sides: identical buffers.
  const float coef = ClipCoefficient(norm, want / 4);
  EXPECT_NEAR(coef, 0.25, 1e-6);
  for (size_t i = 0; i < host.size(); ++i) {
    ScaleInPlace(host[i].data(), static_cast<int64_t>(host[i].size()), coef);
    ScaleGradientCuda(device[i].ptr, static_cast<int64_t>(host[i].size()), coef, nullptr);
    EXPECT_EQ(device[i].ToHost(), host[i]) << "buffer " << i;
  }
}

TEST(ClipCudaTest, ScaleMatchesCpu) {
  if (!CudaDeviceAvailable()) GTEST_SKIP() << "no CUDA device";
  for (int64_t n : kSizes) {
    std::vector<float> x = Random(n, static_cast<uint32_t>(n + 2));
    DeviceBuffer<float> dx(n);
    dx.CopyFrom(x);
    ScaleGradientCuda(dx.ptr, n, 0.3125f, nullptr);
    ScaleInPlace(x.data(), n, 0.3125f);
    const std::vector<float> got = dx.ToHost();
    EXPECT_LE(RelL2(got, x), kRelL2TolF32) << "n=" << n;
    EXPECT_EQ(got, x) << "n=" << n;  // one correctly rounded multiply on both sides
  }
}

}  // namespace
}  // namespace indexcache
