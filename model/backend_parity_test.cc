// Every Backend operation on CUDA against the CPU backend (the reference), on fresh random
// inputs with odd shapes. Inputs are rounded to bf16 first, so the CPU sees exactly what the GPU
// sees; tolerances come from kernels/tolerances.h. Skips without a GPU.
#include <algorithm>
#include <cmath>
#include <tuple>
#include <random>
#include <vector>

#include <gtest/gtest.h>

#include "core/cuda_check.h"
#include "core/test_util.h"
#include "kernels/tolerances.h"
#include "model/backend.h"

namespace indexcache {
namespace {

class BackendParityTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!CudaDeviceAvailable()) GTEST_SKIP() << "no CUDA device";
    cpu_ = MakeCpuBackend();
    auto cuda = MakeCudaBackendOrError();
    ASSERT_TRUE(cuda.ok()) << cuda.status().ToString();
    gpu_ = *cuda;
  }

  // Random values already representable in bf16, as a host f32 tensor.
  Tensor Random(Shape shape, float scale = 1.0f) {
    Tensor t = Tensor::Zeros(DType::kF32, std::move(shape));
    std::normal_distribution<float> dist(0.0f, scale);
    for (int64_t i = 0; i < t.numel(); ++i) t.data<float>()[i] = Bf16ToFloat(FloatToBf16(dist(rng_)));
    return t;
  }
  // The same values on the GPU in bf16.
  Tensor OnGpu(const Tensor& host) { return gpu_->Convert(gpu_->ToDevice(host), DType::kBF16); }
  Tensor GpuWeight(const Tensor& host) { return gpu_->Weight(host.data<float>(), host.shape()); }

  std::mt19937 rng_{1234};
  std::unique_ptr<Backend> cpu_;
  std::shared_ptr<Backend> gpu_;
};

TEST_F(BackendParityTest, LinearAndAccumulate) {
  for (auto [M, K, N] : {std::tuple<int64_t, int64_t, int64_t>{17, 127, 281}, {1, 64, 7}, {127, 281, 17}}) {
    const Tensor x = Random({M, K}), w = Random({N, K}), y0 = Random({M, N});
    Tensor want = Tensor::Zeros(DType::kF32, {M, N});
    std::copy(y0.data<float>(), y0.data<float>() + y0.numel(), want.data<float>());
    cpu_->Linear(x, w, &want, /*accumulate=*/true);
    Tensor y = OnGpu(y0);
    gpu_->Linear(OnGpu(x), GpuWeight(w), &y, /*accumulate=*/true);
    EXPECT_LE(RelL2(gpu_->ToHost(y), want), kRelL2TolBf16) << M << "x" << K << "x" << N;
    // bf16 inputs with an f32 output (the logits path).
    Tensor want32 = Tensor::Zeros(DType::kF32, {M, N});
    cpu_->Linear(x, w, &want32);
    Tensor y32 = gpu_->Alloc(DType::kF32, {M, N});
    gpu_->Linear(OnGpu(x), GpuWeight(w), &y32);
    EXPECT_LE(RelL2(gpu_->ToHost(y32), want32), kRelL2TolBf16);
  }
}

TEST_F(BackendParityTest, NormsActivationsAndElementwise) {
  const int64_t T = 17, D = 281;
  const Tensor x = Random({T, D}), w = Random({D}), b = Random({D}), up = Random({T, D});
  Tensor want = Tensor::Zeros(DType::kF32, {T, D});
  Tensor got = gpu_->Alloc(DType::kBF16, {T, D});

  cpu_->RmsNorm(x, w, 1e-6f, &want);
  gpu_->RmsNorm(OnGpu(x), GpuWeight(w), 1e-6f, &got);
  EXPECT_LE(RelL2(gpu_->ToHost(got), want), kRelL2TolBf16) << "RmsNorm";

  cpu_->LayerNorm(x, w, b, 1e-6f, &want);
  gpu_->LayerNorm(OnGpu(x), GpuWeight(w), GpuWeight(b), 1e-6f, &got);
  EXPECT_LE(RelL2(gpu_->ToHost(got), want), kRelL2TolBf16) << "LayerNorm";

  cpu_->SiluMul(x, up, &want);
  gpu_->SiluMul(OnGpu(x), OnGpu(up), &got);
  EXPECT_LE(RelL2(gpu_->ToHost(got), want), kRelL2TolBf16) << "SiluMul";

  Tensor acc_cpu = Random({T, D});
  Tensor acc_gpu = OnGpu(acc_cpu);
  cpu_->Add(x, &acc_cpu);
  gpu_->Add(OnGpu(x), &acc_gpu);
  cpu_->Scale(&acc_cpu, 0.37f);
  gpu_->Scale(&acc_gpu, 0.37f);
  EXPECT_LE(RelL2(gpu_->ToHost(acc_gpu), acc_cpu), kRelL2TolBf16) << "Add/Scale";

  const std::vector<int32_t> tokens = {3, 0, 16, 16, 5};
  Tensor emb_cpu = Tensor::Zeros(DType::kF32, {5, D});
  Tensor emb_gpu = gpu_->Alloc(DType::kBF16, {5, D});
  cpu_->Embedding(x, tokens, &emb_cpu);
  gpu_->Embedding(GpuWeight(x), tokens, &emb_gpu);
  EXPECT_EQ(RelL2(gpu_->ToHost(emb_gpu), emb_cpu), 0.0) << "Embedding";
}

TEST_F(BackendParityTest, RopeBothLayoutsAndMlaLatent) {
  RopeConfig rope;
  rope.theta = 10000.0;
  const int64_t T = 19, heads = 3, head_stride = 40, offset = 8, rope_dim = 16;
  const RopeTable table = BuildRopeTable(rope, rope_dim, 0, T);
  for (bool interleaved : {true, false}) {
    Tensor x = Random({T, heads * head_stride});
    Tensor g = OnGpu(x);
    cpu_->Rope(table, interleaved, heads, head_stride, offset, &x);
    gpu_->Rope(table, interleaved, heads, head_stride, offset, &g);
    EXPECT_LE(RelL2(gpu_->ToHost(g), x), kRelL2TolBf16) << "interleaved " << interleaved;
  }
  MlaDims d;
  d.heads = 1;
  d.kv_lora = 37;
  d.rope = rope_dim;
  const Tensor ckv = Random({T, d.latent()}), w = Random({d.kv_lora});
  Tensor want = Tensor::Zeros(DType::kF32, {T, d.latent()});
  Tensor got = gpu_->Alloc(DType::kBF16, {T, d.latent()});
  cpu_->MlaLatent(ckv, w, 1e-6f, table, d, &want);
  gpu_->MlaLatent(OnGpu(ckv), GpuWeight(w), 1e-6f, table, d, &got);
  EXPECT_LE(RelL2(gpu_->ToHost(got), want), kRelL2TolBf16) << "MlaLatent";
}

TEST_F(BackendParityTest, AbsorbQueryAndValue) {
  MlaDims d;
  d.heads = 3;
  d.nope = 16;
  d.rope = 8;
  d.v = 24;
  d.kv_lora = 40;
  const int64_t T = 17;
  const Tensor q = Random({T, d.heads * d.qk()});
  const Tensor kv_b = Random({d.heads * (d.nope + d.v), d.kv_lora}, 0.2f);
  Tensor want = Tensor::Zeros(DType::kF32, {T, d.heads, d.latent()});
  Tensor got = gpu_->Alloc(DType::kBF16, {T, d.heads, d.latent()});
  cpu_->AbsorbQuery(q, kv_b, d, &want);
  gpu_->AbsorbQuery(OnGpu(q), GpuWeight(kv_b), d, &got);
  EXPECT_LE(RelL2(gpu_->ToHost(got), want), kRelL2TolBf16) << "AbsorbQuery";

  const Tensor lat = Random({T, d.heads, d.kv_lora});
  Tensor want_v = Tensor::Zeros(DType::kF32, {T, d.heads * d.v});
  Tensor got_v = gpu_->Alloc(DType::kBF16, {T, d.heads * d.v});
  cpu_->AbsorbValue(lat, kv_b, d, &want_v);
  gpu_->AbsorbValue(OnGpu(lat), GpuWeight(kv_b), d, &got_v);
  EXPECT_LE(RelL2(gpu_->ToHost(got_v), want_v), kRelL2TolBf16) << "AbsorbValue";
}

// FP8-resident weights (CUDA keeps e4m3 + scales and dequantises into one scratch per use)
// against the CPU's load-time dequantisation, including the scratch switching between weights
// (A, B, A) and kv_b's two uses in a row (the second finds it already dequantised).
TEST_F(BackendParityTest, Fp8ResidentWeights) {
  struct Fp8 {
    Tensor q, scale;
    int64_t br, bc;
  };
  auto random_fp8 = [&](int64_t rows, int64_t cols, int64_t br, int64_t bc) {
    Fp8 f{Tensor::Zeros(DType::kF8E4M3, {rows, cols}),
          Tensor::Zeros(DType::kF32, {(rows + br - 1) / br, (cols + bc - 1) / bc}), br, bc};
    for (int64_t i = 0; i < f.q.numel(); ++i) {
      uint8_t b;
      do b = static_cast<uint8_t>(rng_() & 0xff); while ((b & 0x7f) == 0x7f);
      f.q.data<uint8_t>()[i] = b;
    }
    std::uniform_real_distribution<float> u(0.5f / 448, 2.0f / 448);
    for (int64_t i = 0; i < f.scale.numel(); ++i) f.scale.data<float>()[i] = u(rng_);
    return f;
  };
  auto place = [&](Backend* b, const Fp8& f) {
    auto w = b->WeightFp8("test.weight", f.q, f.scale, f.br, f.bc);
    EXPECT_TRUE(w.ok()) << w.status().ToString();
    return *w;
  };
  const int64_t M = 17, K = 128;
  // A: vectorised kernel path, partial row block; B: 16 x 24 blocks, scalar path.
  const Fp8 a = random_fp8(281, K, 128, 128), b = random_fp8(96, K, 16, 24);
  const PlacedWeight a_cpu = place(cpu_.get(), a), b_cpu = place(cpu_.get(), b);
  const PlacedWeight a_gpu = place(gpu_.get(), a), b_gpu = place(gpu_.get(), b);
  EXPECT_TRUE(a_gpu.is_fp8() && !a_cpu.is_fp8());
  EXPECT_EQ(a_gpu.nbytes(), 281 * K + 3 * 1 * 4);
  EXPECT_GE(gpu_->Fp8ScratchBytes(), 281 * K * 2);
  const Tensor x = Random({M, K});
  for (const auto& [name, cw, gw] : {std::make_tuple("A", &a_cpu, &a_gpu), std::make_tuple("B", &b_cpu, &b_gpu),
                                     std::make_tuple("A again", &a_cpu, &a_gpu)}) {
    const int64_t N = cw->size(0);
    Tensor want = Tensor::Zeros(DType::kF32, {M, N});
    cpu_->Linear(x, *cw, &want);
    Tensor got = gpu_->Alloc(DType::kF32, {M, N});
    gpu_->Linear(OnGpu(x), *gw, &got);
    EXPECT_LE(RelL2(gpu_->ToHost(got), want), kRelL2TolBf16) << "Linear " << name;
  }

  MlaDims d;
  d.heads = 3;
  d.nope = 16;
  d.rope = 8;
  d.v = 24;
  d.kv_lora = 40;
  const int64_t T = 17;
  const Fp8 kv_b = random_fp8(d.heads * (d.nope + d.v), d.kv_lora, 32, 16);
  const PlacedWeight kv_cpu = place(cpu_.get(), kv_b), kv_gpu = place(gpu_.get(), kv_b);
  const Tensor q = Random({T, d.heads * d.qk()}), lat = Random({T, d.heads, d.kv_lora});
  Tensor want_q = Tensor::Zeros(DType::kF32, {T, d.heads, d.latent()});
  Tensor want_v = Tensor::Zeros(DType::kF32, {T, d.heads * d.v});
  cpu_->AbsorbQuery(q, kv_cpu, d, &want_q);
  cpu_->AbsorbValue(lat, kv_cpu, d, &want_v);
  for (bool other_weight_between : {false, true}) {
    Tensor got_q = gpu_->Alloc(DType::kBF16, {T, d.heads, d.latent()});
    Tensor got_v = gpu_->Alloc(DType::kBF16, {T, d.heads * d.v});
    gpu_->AbsorbQuery(OnGpu(q), kv_gpu, d, &got_q);
    if (other_weight_between) {
      Tensor y = gpu_->Alloc(DType::kF32, {M, 96});
      gpu_->Linear(OnGpu(x), b_gpu, &y);
    }
    gpu_->AbsorbValue(OnGpu(lat), kv_gpu, d, &got_v);
    EXPECT_LE(RelL2(gpu_->ToHost(got_q), want_q), kRelL2TolBf16) << "AbsorbQuery " << other_weight_between;
    EXPECT_LE(RelL2(gpu_->ToHost(got_v), want_v), kRelL2TolBf16) << "AbsorbValue " << other_weight_between;
  }
}

TEST_F(BackendParityTest, SmallSparseMlaAndIndexerTopk) {
  MlaDims d;
  d.heads = 3;
  d.rope = 8;
  d.kv_lora = 32;
  const int64_t T = 23, K = 9;
  const Tensor q = Random({T, d.heads, d.latent()}, 0.5f), kv = Random({T, d.latent()}, 0.5f);
  Tensor idx = Tensor::Zeros(DType::kI32, {T, K});
  for (int64_t t = 0; t < T; ++t) {
    for (int64_t j = 0; j < K; ++j) idx.data<int32_t>()[t * K + j] = j <= t ? static_cast<int32_t>((t * 7 + j * 3) % (t + 1)) : -1;
  }
  Tensor out = Tensor::Zeros(DType::kF32, {T, d.heads, d.kv_lora}), lse = Tensor::Zeros(DType::kF32, {T, d.heads});
  Tensor gout = gpu_->Alloc(DType::kBF16, {T, d.heads, d.kv_lora}), glse = gpu_->Alloc(DType::kF32, {T, d.heads});
  cpu_->SparseMla(q, kv, idx, d, 0.3f, &out, &lse);
  gpu_->SparseMla(OnGpu(q), OnGpu(kv), gpu_->ToDevice(idx), d, 0.3f, &gout, &glse);
  EXPECT_LE(RelL2(gpu_->ToHost(gout), out), kRelL2TolBf16) << "SparseMla out";
  EXPECT_LE(RelL2(gpu_->ToHost(glse), lse), 1e-3) << "SparseMla lse";

  // Indexer: compare the selected sets row by row (random data: no ties at the cut).
  const int64_t H = 4, D = 32, topk = 7;
  const Tensor iq = Random({T, H, D}), ik = Random({T, D}), iw = Random({T, H});
  Tensor sel = Tensor::Zeros(DType::kI32, {T, topk});
  Tensor gsel = gpu_->Alloc(DType::kI32, {T, topk});
  cpu_->IndexerTopk(iq, ik, iw, topk, 0, 0.17f, &sel);
  gpu_->IndexerTopk(OnGpu(iq), OnGpu(ik), gpu_->ToDevice(iw), topk, 0, 0.17f, &gsel);
  const Tensor h_sel = gpu_->ToHost(gsel);
  int mismatched_rows = 0;
  for (int64_t t = 0; t < T; ++t) {
    std::vector<int32_t> a(sel.data<int32_t>() + t * topk, sel.data<int32_t>() + (t + 1) * topk);
    std::vector<int32_t> b(h_sel.data<int32_t>() + t * topk, h_sel.data<int32_t>() + (t + 1) * topk);
    std::sort(a.begin(), a.end());
    std::sort(b.begin(), b.end());
    mismatched_rows += a != b;
  }
  EXPECT_EQ(mismatched_rows, 0);
}

// Routing on the device equals the host oracle (experts exactly, in order; weights to 1e-6);
// grouping equals element for element; gather and combine are bitwise equal on bf16 values.
TEST_F(BackendParityTest, MoeRoutingGroupingGatherCombine) {
  const int64_t T = 13, E = 24, C = 40, K = 3;
  const Tensor logits = Random({T, E}), bias = Random({E}, 0.1f);
  MoeRouteSpec spec;
  spec.n_group = 4;
  spec.topk_group = 2;
  spec.topk = K;
  spec.routed_scaling_factor = 2.5f;
  const MoeRouting want = MoeRouteOnHost(logits.data<float>(), bias.data<float>(), T, E, spec);
  Tensor e_cpu = Tensor::Zeros(DType::kI32, {T, K}), w_cpu = Tensor::Zeros(DType::kF32, {T, K});
  cpu_->MoeRoute(logits, bias, spec, &e_cpu, &w_cpu);
  Tensor e_gpu = gpu_->Alloc(DType::kI32, {T, K}), w_gpu = gpu_->Alloc(DType::kF32, {T, K});
  gpu_->MoeRoute(gpu_->ToDevice(logits), gpu_->ToDevice(bias), spec, &e_gpu, &w_gpu);
  const Tensor e_host = gpu_->ToHost(e_gpu), w_host = gpu_->ToHost(w_gpu);
  for (int64_t i = 0; i < T * K; ++i) {
    EXPECT_EQ(e_cpu.data<int32_t>()[i], want.experts[i]);
    EXPECT_EQ(e_host.data<int32_t>()[i], want.experts[i]) << i;
    EXPECT_NEAR(w_host.data<float>()[i], want.weights[i], 1e-6f * std::fabs(want.weights[i])) << i;
  }

  const MoeGrouping g_cpu = cpu_->MoeGroupByExpert(e_cpu, E);
  const MoeGrouping g_gpu = gpu_->MoeGroupByExpert(e_gpu, E);
  EXPECT_EQ(g_gpu.offsets, g_cpu.offsets);
  const Tensor order = gpu_->ToHost(g_gpu.order), inverse = gpu_->ToHost(g_gpu.inverse);
  for (int64_t i = 0; i < T * K; ++i) {
    EXPECT_EQ(order.data<int32_t>()[i], g_cpu.order.data<int32_t>()[i]);
    EXPECT_EQ(inverse.data<int32_t>()[i], g_cpu.inverse.data<int32_t>()[i]);
  }

  const Tensor x = Random({T, C});
  Tensor p_cpu = Tensor::Zeros(DType::kF32, {T * K, C});
  Tensor p_gpu = gpu_->Alloc(DType::kBF16, {T * K, C});
  cpu_->MoeGather(x, g_cpu.order, K, &p_cpu);
  gpu_->MoeGather(OnGpu(x), g_gpu.order, K, &p_gpu);
  EXPECT_EQ(RelL2(gpu_->ToHost(p_gpu), p_cpu), 0.0);
  // Combine with the GPU's weights on both sides, onto the same y, from the same bf16 rows.
  const Tensor rows = Random({T * K, C});
  Tensor y_cpu = Random({T, C});
  Tensor y_gpu = OnGpu(y_cpu);
  cpu_->MoeCombine(rows, g_cpu.inverse, w_host, &y_cpu);
  gpu_->MoeCombine(OnGpu(rows), g_gpu.inverse, w_gpu, &y_gpu);
  const Tensor got = gpu_->ToHost(y_gpu);
  for (int64_t i = 0; i < T * C; ++i) {
    ASSERT_EQ(got.data<float>()[i], Bf16ToFloat(FloatToBf16(y_cpu.data<float>()[i]))) << i;
  }
}

// --- training operations -------------------------------------------------------------------------

TEST_F(BackendParityTest, GemmAllTransposesF32) {
  for (bool ta : {false, true}) {
    for (bool tb : {false, true}) {
      const int64_t M = 17, K = 127, N = 33;
      const Tensor a = Random(ta ? Shape{K, M} : Shape{M, K}), b = Random(tb ? Shape{N, K} : Shape{K, N});
      Tensor want = Random({M, N});
      Tensor got = gpu_->ToDevice(want);
      cpu_->Gemm(a, ta, b, tb, 0.5f, 1.0f, &want);
      gpu_->Gemm(gpu_->ToDevice(a), ta, gpu_->ToDevice(b), tb, 0.5f, 1.0f, &got);
      EXPECT_LE(RelL2(gpu_->ToHost(got), want), kRelL2TolF32) << "ta " << ta << " tb " << tb;
    }
  }
}

TEST_F(BackendParityTest, LayerNormTrainAndBackward) {
  const int64_t rows = 19, D = 128;
  const Tensor x = Random({rows, D}), w = Random({D}), b = Random({D}), dy = Random({rows, D});
  Tensor y = Tensor::Zeros(DType::kF32, {rows, D}), xh = Tensor::Zeros(DType::kF32, {rows, D}),
         inv = Tensor::Zeros(DType::kF32, {rows});
  Tensor gy = gpu_->Alloc(DType::kF32, {rows, D}), gxh = gpu_->Alloc(DType::kF32, {rows, D}),
         ginv = gpu_->Alloc(DType::kF32, {rows});
  cpu_->LayerNormTrain(x, w, b, 1e-6f, &y, &xh, &inv);
  gpu_->LayerNormTrain(gpu_->ToDevice(x), gpu_->ToDevice(w), gpu_->ToDevice(b), 1e-6f, &gy, &gxh, &ginv);
  EXPECT_LE(RelL2(gpu_->ToHost(gy), y), kRelL2TolF32);
  EXPECT_LE(RelL2(gpu_->ToHost(ginv), inv), kRelL2TolF32);
  Tensor dx = Tensor::Zeros(DType::kF32, {rows, D}), dw = Tensor::Zeros(DType::kF32, {D}), db = Tensor::Zeros(DType::kF32, {D});
  Tensor gdx = gpu_->Alloc(DType::kF32, {rows, D}), gdw = gpu_->Alloc(DType::kF32, {D}), gdb = gpu_->Alloc(DType::kF32, {D});
  cpu_->LayerNormBackward(dy, xh, inv, w, &dx, &dw, &db);
  gpu_->LayerNormBackward(gpu_->ToDevice(dy), gxh, ginv, gpu_->ToDevice(w), &gdx, &gdw, &gdb);
  EXPECT_LE(RelL2(gpu_->ToHost(gdx), dx), 1e-4);
  EXPECT_LE(RelL2(gpu_->ToHost(gdw), dw), 1e-4);
  EXPECT_LE(RelL2(gpu_->ToHost(gdb), db), 1e-4);
}

TEST_F(BackendParityTest, DistillLossDenseAndSparse) {
  const int64_t T = 37, HI = 4, D = 32, HA = 5, DA = 72, K = 12;
  for (bool sparse : {false, true}) {
    DistillLossArgs c, g;
    const Tensor q = Random({T, HI * D}, 0.5f), k = Random({T, D}, 0.5f), w = Random({T, HI}, 0.5f);
    c.q = q; c.k = k; c.w = w;
    g.q = gpu_->ToDevice(q); g.k = gpu_->ToDevice(k); g.w = gpu_->ToDevice(w);
    for (int j = 0; j < 2; ++j) {
      const Tensor aq = Random({T, HA, DA}, 0.3f), akv = Random({T, DA}, 0.3f);
      c.attn_q.push_back(aq);
      c.attn_kv.push_back(akv);
      g.attn_q.push_back(OnGpu(aq));
      g.attn_kv.push_back(OnGpu(akv));
    }
    Tensor topk = Tensor::Zeros(DType::kI32, {T, K});
    for (int64_t t = 0; t < T; ++t) {
      for (int64_t j = 0; j < K; ++j) topk.data<int32_t>()[t * K + j] = j <= t ? static_cast<int32_t>((t * 5 + j * 7) % (t + 1)) : -1;
    }
    c.index_scale = g.index_scale = 0.17f;
    c.attn_scale = g.attn_scale = 0.12f;
    c.sparse = g.sparse = sparse;
    c.topk = topk;
    g.topk = gpu_->ToDevice(topk);
    Tensor cq = Tensor::Zeros(DType::kF32, {T, HI * D}), ck = Tensor::Zeros(DType::kF32, {T, D}), cw = Tensor::Zeros(DType::kF32, {T, HI});
    Tensor gq = gpu_->Alloc(DType::kF32, {T, HI * D}), gk = gpu_->Alloc(DType::kF32, {T, D}), gw = gpu_->Alloc(DType::kF32, {T, HI});
    c.grad_q = &cq; c.grad_k = &ck; c.grad_w = &cw;
    g.grad_q = &gq; g.grad_k = &gk; g.grad_w = &gw;
    // The CPU sees the bf16-rounded student the GPU kernel reads.
    for (Tensor* t : {&c.q, &c.k}) {
      Tensor r = Tensor::Zeros(DType::kF32, t->shape());
      for (int64_t i = 0; i < t->numel(); ++i) r.data<float>()[i] = Bf16ToFloat(FloatToBf16(t->data<float>()[i]));
      *t = r;
    }
    const double want = cpu_->DistillLoss(c), got = gpu_->DistillLoss(g);
    EXPECT_NEAR(got, want, 1e-3 * std::fabs(want)) << "sparse " << sparse;
    EXPECT_LE(RelL2(gpu_->ToHost(gq), cq), 2 * kRelL2TolBf16) << "grad_q sparse " << sparse;
    EXPECT_LE(RelL2(gpu_->ToHost(gk), ck), 2 * kRelL2TolBf16) << "grad_k sparse " << sparse;
    EXPECT_LE(RelL2(gpu_->ToHost(gw), cw), 2 * kRelL2TolBf16) << "grad_w sparse " << sparse;
  }
}

}  // namespace
}  // namespace indexcache

namespace indexcache {
namespace {

TEST_F(BackendParityTest, CrossEntropyRows) {
  const int64_t R = 37, V = 1031;
  const Tensor logits = Random({R, V}, 3.0f);
  std::vector<int32_t> targets(R);
  for (int64_t r = 0; r < R; ++r) targets[r] = static_cast<int32_t>((r * 97) % V);
  const std::vector<double> want = cpu_->CrossEntropyRows(logits, targets);
  const std::vector<double> got = gpu_->CrossEntropyRows(gpu_->ToDevice(logits), targets);
  ASSERT_EQ(got.size(), want.size());
  for (int64_t r = 0; r < R; ++r) EXPECT_NEAR(got[r], want[r], kCrossEntropyAbsTol * std::max(1.0, std::fabs(want[r])));
}

}  // namespace
}  // namespace indexcache
