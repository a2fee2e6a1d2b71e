// AdamWUpdateCuda against AdamWUpdateCpu over several steps on random odd sizes, with aligned
// pointers (float4 path plus tail) and misaligned ones (scalar path), with and without weight
// decay. Skips without a CUDA device (CI has none).
#include "optim/adamw_cuda.h"

#include <cmath>
#include <cstdint>
#include <random>
#include <string>
#include <vector>

#include "core/cuda_check.h"
#include "core/test_util.h"
#include "gtest/gtest.h"
#include "kernels/tolerances.h"
#include "optim/adamw_update.h"

namespace indexcache {
namespace {

// Device buffer of n floats (plus `offset` leading ones, to misalign it), freed on scope exit.
struct DeviceFloats {
  DeviceFloats(size_t n, size_t offset) : n(n), offset(offset) { CUDA_CHECK(cudaMalloc(&base, (n + offset) * 4)); }
  ~DeviceFloats() { cudaFree(base); }
  float* ptr() const { return base + offset; }
  void CopyFrom(const std::vector<float>& h) { CUDA_CHECK(cudaMemcpy(ptr(), h.data(), n * 4, cudaMemcpyHostToDevice)); }
  std::vector<float> ToHost() const {
    std::vector<float> h(n);
    CUDA_CHECK(cudaMemcpy(h.data(), ptr(), n * 4, cudaMemcpyDeviceToHost));
    return h;
  }
  float* base = nullptr;
  size_t n, offset;
};

std::vector<float> Random(size_t n, std::mt19937* rng, float stddev) {
  std::normal_distribution<float> normal(0.f, stddev);
  std::vector<float> v(n);
  for (float& x : v) x = normal(*rng);
  return v;
}

struct Case {
  int64_t n;
  size_t offset;  // elements: 0 keeps cudaMalloc's alignment, 1 forces the scalar kernel
};

class AdamWCudaTest : public ::testing::TestWithParam<Case> {};

TEST_P(AdamWCudaTest, MatchesCpuOverSeveralSteps) {
  if (!CudaDeviceAvailable()) GTEST_SKIP() << "no CUDA device";
  const Case c = GetParam();
  for (double weight_decay : {0.0, 0.1}) {
    std::mt19937 rng(static_cast<uint32_t>(c.n * 3 + c.offset));
    std::vector<float> p = Random(c.n, &rng, 1.f), m(c.n, 0.f), v(c.n, 0.f);
    DeviceFloats dp(c.n, c.offset), dm(c.n, c.offset), dv(c.n, c.offset), dg(c.n, c.offset);
    dp.CopyFrom(p);
    dm.CopyFrom(m);
    dv.CopyFrom(v);
    for (int64_t t = 1; t <= 5; ++t) {
      const std::vector<float> g = Random(c.n, &rng, 0.05f * t);
      const double lr = 1e-2 / t;
      const AdamWScalars s = MakeAdamWScalars(lr, 0.9, 0.95, 1e-8, weight_decay, t);
      AdamWUpdateCpu(p.data(), m.data(), v.data(), g.data(), c.n, s);
      dg.CopyFrom(g);
      AdamWUpdateCuda(dp.ptr(), dm.ptr(), dv.ptr(), dg.ptr(), c.n, s, nullptr);
    }
    CUDA_CHECK(cudaDeviceSynchronize());
    const std::string what = "n=" + std::to_string(c.n) + " wd=" + std::to_string(weight_decay);
    EXPECT_LE(RelL2(dp.ToHost(), p), kRelL2TolF32) << what << " param";
    EXPECT_LE(RelL2(dm.ToHost(), m), kRelL2TolF32) << what << " exp_avg";
    EXPECT_LE(RelL2(dv.ToHost(), v), kRelL2TolF32) << what << " exp_avg_sq";
  }
}

INSTANTIATE_TEST_SUITE_P(Sizes, AdamWCudaTest,
                         ::testing::Values(Case{17, 0}, Case{127, 0}, Case{281, 0}, Case{100003, 0}, Case{17, 1},
                                           Case{281, 1}, Case{100003, 1}),
                         [](const ::testing::TestParamInfo<Case>& info) {
                           return std::to_string(info.param.n) + (info.param.offset ? "_misaligned" : "");
                         });

TEST(AdamWCudaTest, EmptyIsANoOp) {
  if (!CudaDeviceAvailable()) GTEST_SKIP() << "no CUDA device";
  AdamWUpdateCuda(nullptr, nullptr, nullptr, nullptr, 0, MakeAdamWScalars(1e-3, 0.9, 0.999, 1e-8, 0.0, 1), nullptr);
  CUDA_CHECK(cudaDeviceSynchronize());
}

}  // namespace
}  // namespace indexcache
