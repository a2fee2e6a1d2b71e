// NoteNonFiniteCuda: finds a single NaN or Inf anywhere (first, last, middle element; bf16 and
// fp32; sizes around the block and grid strides) and keeps the smallest tag. Skips without a GPU.
#include "kernels/finite_check_cuda.h"

#include <climits>
#include <cmath>
#include <vector>

#include "core/cuda_check.h"
#include "core/device_buffer.h"
#include "core/dtype.h"
#include "gtest/gtest.h"

namespace indexcache {
namespace {

int32_t Scan(const std::vector<float>& values, bool bf16, int32_t tag, int32_t start = INT_MAX) {
  DeviceBuffer<int32_t> flag(1);
  flag.CopyFrom(&start);
  const size_t n = values.size();
  if (bf16) {
    std::vector<uint16_t> h(n);
    for (size_t i = 0; i < n; ++i) h[i] = FloatToBf16(values[i]);
    DeviceBuffer<uint16_t> x(n);
    x.CopyFrom(h.data());
    NoteNonFiniteCuda(x.ptr, true, static_cast<int64_t>(n), tag, flag.ptr, nullptr);
  } else {
    DeviceBuffer<float> x(n);
    x.CopyFrom(values.data());
    NoteNonFiniteCuda(x.ptr, false, static_cast<int64_t>(n), tag, flag.ptr, nullptr);
  }
  int32_t out = 0;
  flag.CopyTo(&out);
  return out;
}

TEST(FiniteCheckCudaTest, FindsAnySingleNonFiniteValue) {
  if (!CudaDeviceAvailable()) GTEST_SKIP() << "no CUDA device";
  for (bool bf16 : {false, true}) {
    for (int64_t n : {1, 31, 256, 257, 300000, 5000000}) {
      SCOPED_TRACE(std::to_string(n) + (bf16 ? " bf16" : " f32"));
      std::vector<float> v(n, 1.5f);
      EXPECT_EQ(Scan(v, bf16, 3), INT_MAX);
      for (int64_t at : {int64_t{0}, n / 2, n - 1}) {
        for (float bad : {NAN, INFINITY, -INFINITY}) {
          v[at] = bad;
          EXPECT_EQ(Scan(v, bf16, 3), 3) << "at " << at;
          v[at] = 1.5f;
        }
      }
    }
  }
}

TEST(FiniteCheckCudaTest, KeepsTheSmallestTag) {
  if (!CudaDeviceAvailable()) GTEST_SKIP() << "no CUDA device";
  const std::vector<float> v = {0.f, NAN};
  EXPECT_EQ(Scan(v, false, 7, /*start=*/2), 2);
  EXPECT_EQ(Scan(v, false, 1, /*start=*/2), 1);
  EXPECT_EQ(Scan({0.f, 1.f}, false, 1, /*start=*/5), 5);
}

}  // namespace
}  // namespace indexcache
