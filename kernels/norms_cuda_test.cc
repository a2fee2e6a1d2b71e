// RmsNormCuda against RmsNormCpu on random inputs, fp32 and bf16, at shapes that exercise the
// scalar path (dim not a multiple of the 16-byte pack), the vector path, one-row and one-warp
// blocks, and the model's hidden sizes. Skips without a CUDA device (CI has none).
#include "kernels/norms_cuda.h"

#include <cmath>
#include <cstdint>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "core/cuda_check.h"
#include "core/device_buffer.h"
#include "core/dtype.h"
#include "core/test_util.h"
#include "gtest/gtest.h"
#include "kernels/norms.h"
#include "kernels/tolerances.h"

namespace indexcache {
namespace {

constexpr float kEps = 1e-6f;

struct Shape {
  int64_t rows, dim;
};

// x ~ N(0, 2) so the rms is far from 1; weight ~ U(0.5, 1.5) so a missing or misindexed weight shows.
void RandomInputs(const Shape& s, uint32_t seed, std::vector<float>* x, std::vector<float>* w) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> normal(0.f, 2.f);
  std::uniform_real_distribution<float> uniform(0.5f, 1.5f);
  x->resize(s.rows * s.dim);
  w->resize(s.dim);
  for (float& v : *x) v = normal(rng);
  for (float& v : *w) v = uniform(rng);
}

class RmsNormCudaTest : public ::testing::TestWithParam<Shape> {};

TEST_P(RmsNormCudaTest, F32MatchesCpu) {
  if (!CudaDeviceAvailable()) GTEST_SKIP() << "no CUDA device";
  const Shape s = GetParam();
  std::vector<float> x, w;
  RandomInputs(s, 1000 + s.rows * 31 + s.dim, &x, &w);
  std::vector<float> ref(x.size()), got(x.size());
  RmsNormCpu(x.data(), w.data(), s.rows, s.dim, kEps, ref.data());

  DeviceBuffer<float> dx(x.size()), dw(w.size()), dy(x.size());
  dx.CopyFrom(x.data());
  dw.CopyFrom(w.data());
  RmsNormCuda(dx.ptr, dw.ptr, s.rows, s.dim, kEps, dy.ptr, nullptr);
  dy.CopyTo(got.data());
  EXPECT_LE(RelL2(got, ref), kRelL2TolF32);

  // In place (x == out), as RmsNormCpu allows.
  RmsNormCuda(dx.ptr, dw.ptr, s.rows, s.dim, kEps, dx.ptr, nullptr);
  dx.CopyTo(got.data());
  EXPECT_LE(RelL2(got, ref), kRelL2TolF32) << "in place";
}

TEST_P(RmsNormCudaTest, Bf16MatchesCpuOnRoundedInputs) {
  if (!CudaDeviceAvailable()) GTEST_SKIP() << "no CUDA device";
  const Shape s = GetParam();
  std::vector<float> x, w;
  RandomInputs(s, 2000 + s.rows * 31 + s.dim, &x, &w);
  // Round the inputs to bf16 so that the reference sees exactly what the kernel sees.
  std::vector<uint16_t> xb(x.size()), wb(w.size()), yb(x.size());
  for (size_t i = 0; i < x.size(); ++i) x[i] = Bf16ToFloat(xb[i] = FloatToBf16(x[i]));
  for (size_t i = 0; i < w.size(); ++i) w[i] = Bf16ToFloat(wb[i] = FloatToBf16(w[i]));
  std::vector<float> ref(x.size()), got(x.size());
  RmsNormCpu(x.data(), w.data(), s.rows, s.dim, kEps, ref.data());

  static_assert(sizeof(__nv_bfloat16) == sizeof(uint16_t), "bf16 is its 16 bits");
  DeviceBuffer<__nv_bfloat16> dx(x.size()), dw(w.size()), dy(x.size());
  dx.CopyFrom(xb.data());
  dw.CopyFrom(wb.data());
  RmsNormCuda(dx.ptr, dw.ptr, s.rows, s.dim, kEps, dy.ptr, nullptr);
  dy.CopyTo(yb.data());
  for (size_t i = 0; i < yb.size(); ++i) got[i] = Bf16ToFloat(yb[i]);
  EXPECT_LE(RelL2(got, ref), kRelL2TolBf16);
}

INSTANTIATE_TEST_SUITE_P(Shapes, RmsNormCudaTest,
                         ::testing::Values(Shape{1, 17}, Shape{17, 127}, Shape{127, 281}, Shape{33, 4096},
                                           Shape{5, 7168}),
                         [](const ::testing::TestParamInfo<Shape>& info) {
                           return std::to_string(info.param.rows) + "x" + std::to_string(info.param.dim);
                         });

}  // namespace
}  // namespace indexcache
