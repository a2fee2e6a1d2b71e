// Fp8QuantRowsCuda against Fp8QuantRowsCpu: codes and scales bitwise equal, on the vectorised
// (cols % 8 == 0, aligned) and scalar paths, odd row counts, an all-zero row, tiny and large rows,
// and the indexer's shapes (q: T * 64 rows of 128, k: L rows of 128). Skips without a CUDA device.
#include "kernels/fp8_quant_cuda.h"

#include <cmath>
#include <cstdint>
#include <cstring>
#include <random>
#include <vector>

#include "core/cuda_check.h"
#include "core/device_buffer.h"
#include "core/dtype.h"
#include "gtest/gtest.h"
#include "kernels/fp8_quant.h"

namespace indexcache {
namespace {

struct Case {
  int64_t rows, cols;
};

void PrintTo(const Case& c, std::ostream* os) { *os << c.rows << "x" << c.cols; }

class Fp8QuantCudaTest : public ::testing::TestWithParam<Case> {};

TEST_P(Fp8QuantCudaTest, BitwiseEqualToCpuReference) {
  if (!CudaDeviceAvailable()) GTEST_SKIP() << "no CUDA device";
  const Case k = GetParam();
  const int64_t n = k.rows * k.cols;
  std::mt19937 rng(static_cast<uint32_t>(k.rows * 31 + k.cols));
  std::normal_distribution<float> normal(0.f, 1.f);
  std::vector<float> x(n);
  std::vector<uint16_t> xb(n);
  for (int64_t r = 0; r < k.rows; ++r) {
    const float mag = std::exp2(static_cast<float>(r % 41) - 20.f);  // 2^-20 .. 2^20
    for (int64_t c = 0; c < k.cols; ++c) {
      const int64_t i = r * k.cols + c;
      xb[i] = FloatToBf16(r == 1 ? 0.f : mag * normal(rng));
      x[i] = Bf16ToFloat(xb[i]);
    }
  }
  std::vector<uint8_t> want_q(n);
  std::vector<float> want_s(k.rows);
  Fp8QuantRowsCpu(x.data(), k.rows, k.cols, want_q.data(), want_s.data());

  DeviceBuffer<uint16_t> dx(n);
  DeviceBuffer<uint8_t> dq(n);
  DeviceBuffer<float> ds(k.rows);
  dx.CopyFrom(xb.data());
  CUDA_CHECK(cudaMemset(dq.ptr, 0x55, dq.bytes));
  Fp8QuantRowsCuda(reinterpret_cast<const __nv_bfloat16*>(dx.ptr), k.rows, k.cols, dq.ptr, ds.ptr, nullptr);
  std::vector<uint8_t> got_q(n);
  std::vector<float> got_s(k.rows);
  dq.CopyTo(got_q.data());
  ds.CopyTo(got_s.data());
  EXPECT_EQ(0, std::memcmp(got_s.data(), want_s.data(), got_s.size() * sizeof(float))) << "scales differ";
  int64_t mismatches = 0, first = -1;
  for (int64_t i = 0; i < n; ++i) {
    if (got_q[i] != want_q[i]) {
      if (first < 0) first = i;
      ++mismatches;
    }
  }
  EXPECT_EQ(mismatches, 0) << "first at " << first << " (x = " << (first >= 0 ? x[first] : 0.f) << ")";
}

INSTANTIATE_TEST_SUITE_P(Shapes, Fp8QuantCudaTest,
                         ::testing::Values(Case{1, 1}, Case{3, 7},           // scalar
                                           Case{17, 130},                    // scalar, cols % 8 != 0
                                           Case{9, 8}, Case{33, 264},        // vectorised, odd rows
                                           Case{1000, 2056},                 // vectorised, several chunks per lane
                                           Case{2048 * 64 + 5, 128},         // q rows of the indexer
                                           Case{131071, 128}));              // k rows

}  // namespace
}  // namespace indexcache
