// The MoE block (model/moe_block.h) against per-token dense math, and across backends.
//
// CPU: the device-style path (route, group by expert, gather, per-expert MLPs over contiguous
// rows, combine) equals, token by token, sum_j weight[t, j] * MLP_{expert[t, j]}(x[t]) with the
// routing of the host oracle (MoeRouteOnHost), plus the shared expert: a wrong offset, a rows/
// expert mix-up or a wrong combine weight cannot pass (a test with two experts swapped checks the
// comparison notices). CUDA (skips without a GPU): the same block with bf16 experts and with
// FP8-resident experts (in one batch and in batches of two through a small dequantisation
// budget) against the CPU backend on the same values, and bitwise equal across runs.
#include "model/moe_block.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <random>
#include <vector>

#include "core/cuda_check.h"
#include "core/test_util.h"
#include "kernels/tolerances.h"
#include "model/backend.h"

namespace indexcache {
namespace {

constexpr int64_t kBlockRows = 16, kBlockCols = 24;  // FP8 blocks that do not divide the shapes

ModelConfig SmallMoeConfig() {
  ModelConfig c;
  c.hidden_size = 64;
  c.moe_intermediate_size = 40;
  c.n_routed_experts = 16;
  c.n_group = 4;
  c.topk_group = 2;
  c.num_experts_per_tok = 4;
  c.n_shared_experts = 1;
  c.norm_topk_prob = true;
  c.routed_scaling_factor = 2.5;
  return c;
}

// One matrix as host data: fp32 values (bf16-representable), or FP8 bytes + scales whose
// dequantised values both backends compute from the same bytes.
struct HostMatrix {
  int64_t rows = 0, cols = 0;
  std::vector<float> values;
  Tensor fp8, scale_inv;
};

struct HostMoe {
  ModelConfig c;
  std::vector<float> router, bias;
  std::vector<HostMatrix> mats;  // per routed expert gate, up, down; then the shared expert's
};

HostMatrix RandomMatrix(int64_t rows, int64_t cols, bool fp8, std::mt19937* rng) {
  HostMatrix m;
  m.rows = rows;
  m.cols = cols;
  const float scale = 1.0f / std::sqrt(static_cast<float>(cols));
  if (!fp8) {
    std::normal_distribution<float> n(0.0f, scale);
    m.values.resize(rows * cols);
    for (float& v : m.values) v = Bf16ToFloat(FloatToBf16(n(*rng)));
    return m;
  }
  m.fp8 = Tensor::Zeros(DType::kF8E4M3, {rows, cols});
  uint8_t* q = static_cast<uint8_t*>(m.fp8.raw());
  // e4m3 with exponent field 4..8 (magnitudes 1/8 .. 3.75), either sign: never NaN.
  for (int64_t i = 0; i < rows * cols; ++i) q[i] = static_cast<uint8_t>(((*rng)() & 0x80) | ((4 + (*rng)() % 5) << 3) | ((*rng)() & 7));
  m.scale_inv = Tensor::Zeros(DType::kF32, {(rows + kBlockRows - 1) / kBlockRows, (cols + kBlockCols - 1) / kBlockCols});
  std::uniform_real_distribution<float> u(0.2f * scale, 0.6f * scale);
  for (int64_t i = 0; i < m.scale_inv.numel(); ++i) m.scale_inv.data<float>()[i] = u(*rng);
  return m;
}

HostMoe RandomMoe(bool fp8, uint32_t seed) {
  HostMoe h;
  h.c = SmallMoeConfig();
  std::mt19937 rng(seed);
  std::normal_distribution<float> n(0.0f, 1.0f);
  const int64_t H = h.c.hidden_size, I = h.c.moe_intermediate_size, E = h.c.n_routed_experts;
  h.router.resize(E * H);
  for (float& v : h.router) v = n(rng) / std::sqrt(static_cast<float>(H));
  h.bias.resize(E);
  for (float& v : h.bias) v = 0.05f * n(rng);
  for (int64_t e = 0; e <= E; ++e) {  // e == E: the shared expert (bf16 or FP8 like the others)
    h.mats.push_back(RandomMatrix(I, H, fp8, &rng));
    h.mats.push_back(RandomMatrix(I, H, fp8, &rng));
    h.mats.push_back(RandomMatrix(H, I, fp8, &rng));
  }
  return h;
}

PlacedWeight Place(Backend& be, const HostMatrix& m) {
  if (m.fp8.empty()) {
    PlacedWeight w;
    w.values = be.Weight(m.values.data(), {m.rows, m.cols});
    return w;
  }
  StatusOr<PlacedWeight> w = be.WeightFp8("expert", m.fp8, m.scale_inv, kBlockRows, kBlockCols);
  IC_CHECK(w.ok());
  return *w;
}

BackendMoe PlaceMoe(Backend& be, const HostMoe& h) {
  BackendMoe w;
  const int64_t H = h.c.hidden_size, E = h.c.n_routed_experts;
  w.router = be.WeightF32(h.router.data(), {E, H});
  w.score_bias = be.WeightF32(h.bias.data(), {E});
  for (int64_t e = 0; e <= E; ++e) {
    BackendMlp mlp{Place(be, h.mats[3 * e]), Place(be, h.mats[3 * e + 1]), Place(be, h.mats[3 * e + 2])};
    if (e < E) w.experts.push_back(mlp); else w.shared = mlp;
  }
  w.has_shared = true;
  return w;
}

Tensor RandomActivations(int64_t T, int64_t H, uint32_t seed) {
  Tensor t = Tensor::Zeros(DType::kF32, {T, H});
  std::mt19937 rng(seed);
  std::normal_distribution<float> n(0.0f, 1.0f);
  for (int64_t i = 0; i < t.numel(); ++i) t.data<float>()[i] = Bf16ToFloat(FloatToBf16(n(rng)));
  return t;
}

Tensor Copy(const Tensor& t) {
  Tensor c = Tensor::Zeros(t.dtype(), t.shape());
  std::memcpy(c.raw(), t.raw(), t.nbytes());
  return c;
}

// y0 + MoE(x) on the CPU backend, token by token: the old per-token definition of the block.
Tensor DenseOracle(Backend& cpu, const HostMoe& h, const BackendMoe& w, const Tensor& x, const Tensor& y0) {
  const ModelConfig& c = h.c;
  const int64_t T = x.size(0), H = x.size(1), K = c.num_experts_per_tok, E = c.n_routed_experts;
  Tensor logits = Tensor::Zeros(DType::kF32, {T, E});
  cpu.Linear(x, w.router, &logits);
  MoeRouteSpec spec;
  spec.n_group = c.n_group;
  spec.topk_group = c.topk_group;
  spec.topk = K;
  spec.norm_topk_prob = c.norm_topk_prob;
  spec.routed_scaling_factor = static_cast<float>(c.routed_scaling_factor);
  const MoeRouting r = MoeRouteOnHost(logits.data<float>(), h.bias.data(), T, E, spec);
  Tensor y = Copy(y0);
  for (int64_t t = 0; t < T; ++t) {
    const Tensor xt = x.Sub(t * H, {1, H});
    for (int64_t j = 0; j < K; ++j) {
      Tensor out = Tensor::Zeros(DType::kF32, {1, H});
      Mlp(cpu, w.experts[r.experts[t * K + j]], xt, &out, /*accumulate=*/false);
      for (int64_t i = 0; i < H; ++i) y.data<float>()[t * H + i] += r.weights[t * K + j] * out.data<float>()[i];
    }
  }
  Mlp(cpu, w.shared, x, &y, /*accumulate=*/true);
  return y;
}

TEST(MoeBlockTest, CpuEqualsPerTokenDenseMath) {
  auto cpu = MakeCpuBackend();
  for (bool fp8 : {false, true}) {
    const HostMoe h = RandomMoe(fp8, 1 + fp8);
    const BackendMoe w = PlaceMoe(*cpu, h);
    for (int64_t T : {1, 7, 37}) {
      const Tensor x = RandomActivations(T, h.c.hidden_size, 10 + T), y0 = RandomActivations(T, h.c.hidden_size, 20);
      const Tensor want = DenseOracle(*cpu, h, w, x, y0);
      Tensor y = Copy(y0);
      Moe(*cpu, h.c, w, x, &y);
      EXPECT_LE(RelL2(y, want), kRelL2TolF32) << "T " << T << " fp8 " << fp8;
    }
  }
}

// The comparison above notices a dispatch that sends rows to the wrong expert.
TEST(MoeBlockTest, SwappedExpertsAreCaught) {
  auto cpu = MakeCpuBackend();
  const HostMoe h = RandomMoe(false, 3);
  const BackendMoe w = PlaceMoe(*cpu, h);
  BackendMoe swapped = w;
  std::swap(swapped.experts[2], swapped.experts[9]);
  const Tensor x = RandomActivations(37, h.c.hidden_size, 4), y0 = RandomActivations(37, h.c.hidden_size, 5);
  Tensor y = Copy(y0);
  Moe(*cpu, h.c, swapped, x, &y);
  EXPECT_GT(RelL2(y, DenseOracle(*cpu, h, w, x, y0)), 1e-2);
}

class MoeBlockCudaTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!CudaDeviceAvailable()) GTEST_SKIP() << "no CUDA device";
    cpu_ = MakeCpuBackend();
    auto cuda = MakeCudaBackendOrError();
    ASSERT_TRUE(cuda.ok()) << cuda.status().ToString();
    gpu_ = *cuda;
  }

  // The block on the GPU twice (bitwise equal) and against the CPU backend.
  Tensor RunAndCompare(const HostMoe& h, int64_t T) {
    const BackendMoe w_cpu = PlaceMoe(*cpu_, h), w_gpu = PlaceMoe(*gpu_, h);
    const Tensor x = RandomActivations(T, h.c.hidden_size, 30 + T), y0 = RandomActivations(T, h.c.hidden_size, 40);
    Tensor want = Copy(y0);
    Moe(*cpu_, h.c, w_cpu, x, &want);
    const Tensor xg = gpu_->Convert(gpu_->ToDevice(x), DType::kBF16);
    Tensor first;
    for (int run = 0; run < 2; ++run) {
      Tensor y = gpu_->Convert(gpu_->ToDevice(y0), DType::kBF16);
      Moe(*gpu_, h.c, w_gpu, xg, &y);
      const Tensor got = gpu_->ToHost(y);
      if (run == 0) {
        EXPECT_LE(RelL2(got, want), kParityRelL2Bf16) << "T " << T;
        first = got;
      } else {
        EXPECT_EQ(std::memcmp(got.raw(), first.raw(), got.nbytes()), 0) << "not bitwise reproducible, T " << T;
      }
    }
    return first;
  }

  std::unique_ptr<Backend> cpu_;
  std::shared_ptr<Backend> gpu_;
};

TEST_F(MoeBlockCudaTest, Bf16ExpertsMatchCpu) {
  const HostMoe h = RandomMoe(false, 7);
  for (int64_t T : {1, 5, 129}) RunAndCompare(h, T);
}

TEST_F(MoeBlockCudaTest, Fp8ResidentExpertsMatchCpuInOneBatchAndInBatchesOfTwo) {
  const HostMoe h = RandomMoe(true, 8);
  const Tensor one = RunAndCompare(h, 129);
  // Two experts' dequantised matrices (2 x 3 x 40 x 64 bf16) and a bit: batches of two.
  gpu_->SetExpertScratchBytes(2 * 3 * 40 * 64 * 2 + 100);
  const Tensor batched = RunAndCompare(h, 129);
  EXPECT_LE(RelL2(batched, one), kRelL2TolBf16);
  RunAndCompare(h, 3);
}

}  // namespace
}  // namespace indexcache
