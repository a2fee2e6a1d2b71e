// The FP8 indexer option on CUDA (Backend::set_indexer_fp8: Fp8QuantRowsCuda, then the e4m3 wgmma
// path of IndexerTopkCuda) against the CPU backend's definition of it (the e4m3 round trip scored
// by IndexerTopkCpu), on bf16-representable inputs so both quantise the same values to the same
// codes. The scores then differ only by summation order, so the selections must agree except at
// near-ties: at least 99 % of the selected keys in common, row by row >= 90 %. And the option
// must change the CUDA selection (it did something). Skips without a GPU.
#include <cmath>
#include <cstdio>
#include <random>
#include <set>
#include <vector>

#include <gtest/gtest.h>

#include "core/cuda_check.h"
#include "core/dtype.h"
#include "model/backend.h"
#include "model/dsa_model.h"

namespace indexcache {
namespace {

Tensor RandomBf16Values(Shape shape, uint32_t seed, float scale) {
  Tensor t = Tensor::Zeros(DType::kF32, shape);
  std::mt19937 rng(seed);
  std::normal_distribution<float> normal(0.0f, scale);
  for (int64_t i = 0; i < t.numel(); ++i) t.data<float>()[i] = Bf16ToFloat(FloatToBf16(normal(rng)));
  return t;
}

std::vector<int32_t> Select(Backend& be, const Tensor& q, const Tensor& k, const Tensor& w, int64_t topk, bool fp8) {
  be.set_indexer_fp8(fp8);
  const bool device = be.device() == Device::kCuda;
  const Tensor dq = device ? be.Convert(be.ToDevice(q), DType::kBF16) : q;
  const Tensor dk = device ? be.Convert(be.ToDevice(k), DType::kBF16) : k;
  const Tensor dw = device ? be.ToDevice(w) : w;
  Tensor idx = be.Alloc(DType::kI32, {q.size(0), topk});
  be.IndexerTopk(dq, dk, dw, topk, k.size(0) - q.size(0), 1.0f / std::sqrt(128.0f), &idx);
  const Tensor host = device ? be.ToHost(idx) : idx;
  return std::vector<int32_t>(host.data<int32_t>(), host.data<int32_t>() + host.numel());
}

TEST(GpuIndexerFp8Test, CudaSelectionMatchesTheCpuDefinition) {
  if (!CudaDeviceAvailable()) GTEST_SKIP() << "no CUDA device";
  auto cpu = MakeBackend("cpu");
  auto cuda = MakeBackend("cuda");
  ASSERT_TRUE(cpu.ok() && cuda.ok());
  const int64_t T = 200, L = 3000, H = 48, topk = 256;
  const Tensor q = RandomBf16Values({T, H, 128}, 1, 1.0f), k = RandomBf16Values({L, 128}, 2, 1.0f);
  Tensor w = RandomBf16Values({T, H}, 3, 0.15f);
  for (int64_t i = 0; i < w.numel(); ++i) w.data<float>()[i] = std::fabs(w.data<float>()[i]);
  const std::vector<int32_t> want = Select(**cpu, q, k, w, topk, true);
  const std::vector<int32_t> got = Select(**cuda, q, k, w, topk, true);
  const std::vector<int32_t> bf16 = Select(**cuda, q, k, w, topk, false);
  int64_t common = 0, worst_row = topk;
  for (int64_t t = 0; t < T; ++t) {
    const std::set<int32_t> a(want.begin() + t * topk, want.begin() + (t + 1) * topk);
    int64_t row = 0;
    for (int64_t j = 0; j < topk; ++j) row += a.count(got[t * topk + j]);
    common += row;
    worst_row = std::min(worst_row, row);
  }
  const double overlap = double(common) / double(T * topk);
  std::printf("FP8 indexer, CUDA against the CPU definition: %.4f of the selected keys in common (worst row %lld / %lld)\n",
              overlap, static_cast<long long>(worst_row), static_cast<long long>(topk));
  EXPECT_GE(overlap, 0.99);
  EXPECT_GE(worst_row, topk * 9 / 10);
  EXPECT_NE(got, bf16) << "--indexer-fp8 changed nothing on CUDA";
}

}  // namespace
}  // namespace indexcache
