// The CUDA backend against the CPU reference on the Hugging Face fixtures.
//
// Tolerances (kernels/tolerances.h): relative L2 on logits <= kParityRelL2Bf16 and argmax
// agreement >= kParityArgmaxAgreeBf16 -- unless the fixture itself is that sensitive to bf16:
// each fixture carries transformers' own bf16 logits, and where transformers' bf16 forward is
// farther from fp32 than that, ours must be no worse than kBf16VsReferenceFactor times it.
// Skips without a GPU.
#include <algorithm>
#include <cmath>
#include <string>

#include <gtest/gtest.h>

#include "core/cuda_check.h"
#include "core/npy.h"
#include "data/token_array.h"
#include "kernels/tolerances.h"
#include "model/dsa_model.h"
#include "trainer/distill.h"

namespace indexcache {
namespace {

struct Agreement {
  double rel_l2 = 0, argmax = 0;
};

Agreement Compare(const float* got, const float* want, int64_t T, int64_t V) {
  double num = 0, den = 0;
  int64_t agree = 0;
  for (int64_t t = 0; t < T; ++t) {
    const float* w = want + t * V;
    const float* g = got + t * V;
    for (int64_t v = 0; v < V; ++v) {
      num += (double(g[v]) - w[v]) * (double(g[v]) - w[v]);
      den += double(w[v]) * w[v];
    }
    agree += std::max_element(w, w + V) - w == std::max_element(g, g + V) - g;
  }
  return {std::sqrt(num / den), double(agree) / T};
}

class GpuParityTest : public ::testing::TestWithParam<std::string> {};

TEST_P(GpuParityTest, CudaLogitsMatchCpu) {
  if (!CudaDeviceAvailable()) GTEST_SKIP() << "no CUDA device";
  const std::string dir = "tests/data/" + GetParam();
  auto cpu = DsaModel::Load(dir, std::nullopt, "cpu");
  auto gpu = DsaModel::Load(dir, std::nullopt, "cuda");
  ASSERT_TRUE(cpu.ok()) << cpu.status().ToString();
  ASSERT_TRUE(gpu.ok()) << gpu.status().ToString();
  auto tokens = ReadTokenArray(dir + "/tokens.npy", cpu->config().vocab_size);
  auto ref = ReadNpy(dir + "/logits.npy");
  auto hf_bf16 = ReadNpy(dir + "/hf_bf16_logits.npy");
  ASSERT_TRUE(tokens.ok() && ref.ok() && hf_bf16.ok());
  const int64_t V = cpu->config().vocab_size, T = tokens->cols();
  for (int64_t b = 0; b < tokens->rows(); ++b) {
    auto want = cpu->Forward(tokens->Row(b));
    auto got = gpu->Forward(tokens->Row(b));
    ASSERT_TRUE(want.ok() && got.ok());
    const Agreement ours = Compare(got->logits.data<float>(), want->logits.data<float>(), T, V);
    const Agreement theirs = Compare(hf_bf16->data<float>() + b * T * V, ref->data<float>() + b * T * V, T, V);
    const double max_rel = std::max(kParityRelL2Bf16, kBf16VsReferenceFactor * theirs.rel_l2);
    const double min_agree = std::min(kParityArgmaxAgreeBf16, theirs.argmax - kBf16ArgmaxSlack);
    std::printf("%s row %lld: ours relative L2 %.3e argmax %.4f | transformers bf16 %.3e argmax %.4f\n", dir.c_str(),
                static_cast<long long>(b), ours.rel_l2, ours.argmax, theirs.rel_l2, theirs.argmax);
    EXPECT_LE(ours.rel_l2, max_rel);
    EXPECT_GE(ours.argmax, min_agree);
  }
}

INSTANTIATE_TEST_SUITE_P(Fixtures, GpuParityTest,
                         ::testing::Values("dsv32_moe_groups", "dsv32_yarn_fp8", "glm_shared_bf16",
                                           "dsv32_gentle_bf16"));

}  // namespace
}  // namespace indexcache

namespace indexcache {
namespace {

// Decode on the GPU: prefill of a prefix, then one token per step through the latent and
// indexer-key caches, against one long prefill on the GPU (same precision, so bf16 rounding of
// different GEMM shapes is the only difference).
TEST(GpuDecodeTest, PrefillThenDecodeMatchesOnePrefill) {
  if (!CudaDeviceAvailable()) GTEST_SKIP() << "no CUDA device";
  for (const char* name : {"dsv32_gentle_bf16", "glm_shared_bf16"}) {
    const std::string dir = std::string("tests/data/") + name;
    auto gpu = DsaModel::Load(dir, std::nullopt, "cuda");
    ASSERT_TRUE(gpu.ok()) << gpu.status().ToString();
    auto tokens = ReadTokenArray(dir + "/tokens.npy", gpu->config().vocab_size);
    const std::vector<int32_t> seq = tokens->Row(0);
    const int64_t T = seq.size(), V = gpu->config().vocab_size, prefix = T / 3;
    auto ref = gpu->Forward(seq);
    ASSERT_TRUE(ref.ok());
    auto cache = gpu->NewCache(T);
    ASSERT_TRUE(cache.ok());
    ForwardOptions step;
    step.cache = &*cache;
    Tensor decoded = Tensor::Zeros(DType::kF32, {T, V});
    auto pre = gpu->Forward(std::vector<int32_t>(seq.begin(), seq.begin() + prefix), step);
    ASSERT_TRUE(pre.ok()) << pre.status().ToString();
    std::copy(pre->logits.data<float>(), pre->logits.data<float>() + prefix * V, decoded.data<float>());
    for (int64_t t = prefix; t < T; ++t) {
      auto r = gpu->Forward({seq[t]}, step);
      ASSERT_TRUE(r.ok()) << r.status().ToString();
      std::copy(r->logits.data<float>(), r->logits.data<float>() + V, decoded.data<float>() + t * V);
    }
    const Agreement a = Compare(decoded.data<float>(), ref->logits.data<float>(), T, V);
    std::printf("%s: GPU decode vs GPU prefill: relative L2 %.3e, argmax agreement %.4f\n", name, a.rel_l2, a.argmax);
    // Shared layers keep no indexer keys in the cache.
    for (int l = 0; l < gpu->config().num_layers; ++l) EXPECT_EQ(cache->index_keys[l].empty(), !gpu->pattern().is_full(l));
    EXPECT_LE(a.rel_l2, std::string(name) == "dsv32_gentle_bf16" ? kParityRelL2Bf16 : 0.35);
  }
}

}  // namespace
}  // namespace indexcache

namespace indexcache {
namespace {

// One distillation pass on the GPU (bf16 model, fused loss kernel, f32 student) against the CPU
// reference, on the well-conditioned fixture: the loss and every weight gradient.
TEST(GpuDistillTest, DistillSequenceMatchesCpu) {
  if (!CudaDeviceAvailable()) GTEST_SKIP() << "no CUDA device";
  const std::string dir = "tests/data/dsv32_gentle_bf16";
  auto cpu = DsaModel::Load(dir, std::string("FSFS"), "cpu");
  auto gpu = DsaModel::Load(dir, std::string("FSFS"), "cuda");
  ASSERT_TRUE(cpu.ok() && gpu.ok());
  auto tokens = ReadTokenArray(dir + "/tokens.npy", cpu->config().vocab_size);
  for (DistillMode mode : {DistillMode::kDense, DistillMode::kSparse}) {
    DistillStats stats[2];
    std::vector<Tensor> grads[2];
    int i = 0;
    for (DsaModel* m : {&*cpu, &*gpu}) {
      Backend& be = m->backend();
      StudentSet students, g;
      for (int l : {0, 2}) {
        const IndexerWeights& w = m->weights().layers[l].indexer;
        students[l] = {be.WeightF32(w.wq_b.data(), {w.wq_b.rows(), w.wq_b.cols()}),
                       be.WeightF32(w.wk.data(), {w.wk.rows(), w.wk.cols()}),
                       be.WeightF32(w.k_norm_weight.data(), {w.k_norm_weight.size()}),
                       be.WeightF32(w.k_norm_bias.data(), {w.k_norm_bias.size()}),
                       be.WeightF32(w.weights_proj.data(), {w.weights_proj.rows(), w.weights_proj.cols()})};
        g[l] = {be.Alloc(DType::kF32, students[l].wq_b.shape()), be.Alloc(DType::kF32, students[l].wk.shape()),
                be.Alloc(DType::kF32, students[l].k_norm_weight.shape()), be.Alloc(DType::kF32, students[l].k_norm_bias.shape()),
                be.Alloc(DType::kF32, students[l].weights_proj.shape())};
      }
      ASSERT_TRUE(DistillSequence(*m, m->pattern(), mode, students, tokens->Row(0), 1.0 / 96, &g, &stats[i]).ok());
      for (int l : {0, 2}) {
        for (const Tensor* t : {&g[l].wq_b, &g[l].wk, &g[l].k_norm_weight, &g[l].k_norm_bias, &g[l].weights_proj}) {
          grads[i].push_back(be.ToHost(*t));
        }
      }
      ++i;
    }
    const double rel_loss = std::fabs(stats[1].mean() - stats[0].mean()) / stats[0].mean();
    std::printf("distill %s: loss cpu %.6f gpu %.6f (rel %.2e)\n", mode == DistillMode::kDense ? "dense" : "sparse",
                stats[0].mean(), stats[1].mean(), rel_loss);
    EXPECT_LE(rel_loss, 2e-2);
    for (size_t k = 0; k < grads[0].size(); ++k) {
      const Agreement a = Compare(grads[1][k].data<float>(), grads[0][k].data<float>(), 1, grads[0][k].numel());
      std::printf("  gradient %zu: relative L2 %.3e\n", k, a.rel_l2);
      EXPECT_LE(a.rel_l2, 0.1) << "gradient " << k;
    }
  }
}

}  // namespace
}  // namespace indexcache
