// The FP8 indexer option of the backends (Backend::set_indexer_fp8) on the CPU reference: a
// prefill-sized call scores the e4m3 round trip of q and k (kernels/fp8_quant.h rows) exactly as
// IndexerTopkCpu does on those values; decode-sized calls and shapes the FP8 kernel does not take
// stay on the full-precision path; and in a forward it changes the selection and nothing else.
#include <cmath>
#include <cstdint>
#include <random>
#include <vector>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "core/dtype.h"
#include "core/test_util.h"
#include "kernels/fp8_quant.h"
#include "kernels/indexer_topk.h"
#include "model/backend.h"
#include "model/config.h"
#include "model/decode_test_util.h"
#include "model/dsa_model.h"
#include "model/random_weights.h"

namespace indexcache {
namespace {

Tensor Random(Shape shape, uint32_t seed, float scale = 1.0f) {
  Tensor t = Tensor::Zeros(DType::kF32, shape);
  std::mt19937 rng(seed);
  std::normal_distribution<float> normal(0.0f, scale);
  for (int64_t i = 0; i < t.numel(); ++i) t.data<float>()[i] = normal(rng);
  return t;
}

std::vector<float> RoundTrip(const Tensor& x, int64_t cols) {
  const int64_t rows = x.numel() / cols;
  std::vector<uint8_t> codes(x.numel());
  std::vector<float> scale(rows), y(x.numel());
  Fp8QuantRowsCpu(x.data<float>(), rows, cols, codes.data(), scale.data());
  for (int64_t i = 0; i < x.numel(); ++i) y[i] = Fp8E4M3ToFloat(codes[i]) * scale[i / cols];
  return y;
}

std::vector<int32_t> Reference(const float* q, const float* k, const Tensor& w, int64_t T, int64_t L, int64_t H,
                               int64_t D, int64_t topk) {
  IndexerTopkParams p;
  p.q = q;
  p.k = k;
  p.weights = w.data<float>();
  p.T = T, p.L = L, p.H = H, p.D = D, p.topk = topk;
  p.query_offset = L - T;
  p.scale = 1.0f / std::sqrt(static_cast<float>(D));
  std::vector<int32_t> out(T * topk);
  p.out_indices = out.data();
  IndexerTopkCpu(p);
  return out;
}

std::vector<int32_t> RunIndexer(Backend& be, const Tensor& q, const Tensor& k, const Tensor& w, int64_t topk) {
  const int64_t T = q.size(0), L = k.size(0), D = k.size(1);
  Tensor idx = Tensor::Zeros(DType::kI32, {T, topk});
  be.IndexerTopk(q, k, w, topk, L - T, 1.0f / std::sqrt(static_cast<float>(D)), &idx);
  return std::vector<int32_t>(idx.data<int32_t>(), idx.data<int32_t>() + idx.numel());
}

TEST(IndexerFp8Test, PrefillCallsScoreTheE4M3RoundTrip) {
  auto backend = MakeBackend("cpu");
  ASSERT_TRUE(backend.ok());
  Backend& be = **backend;
  const int64_t T = 80, L = 300, H = 8, D = 128, K = 16;
  const Tensor q = Random({T, H, D}, 1), k = Random({L, D}, 2), w = Random({T, H}, 3, 0.2f);
  EXPECT_FALSE(be.indexer_fp8());
  const std::vector<int32_t> full = RunIndexer(be, q, k, w, K);
  EXPECT_EQ(full, Reference(q.data<float>(), k.data<float>(), w, T, L, H, D, K));
  be.set_indexer_fp8(true);
  const std::vector<int32_t> fp8 = RunIndexer(be, q, k, w, K);
  const std::vector<float> q8 = RoundTrip(q, D), k8 = RoundTrip(k, D);
  EXPECT_EQ(fp8, Reference(q8.data(), k8.data(), w, T, L, H, D, K));
  EXPECT_NE(fp8, full) << "the FP8 round trip changed no selection: the option did nothing";
  // Most of the selection survives (random data: a few near-ties flip).
  int64_t same = 0;
  for (int64_t t = 0; t < T; ++t) {
    for (int64_t a = 0; a < K; ++a) {
      for (int64_t b = 0; b < K; ++b) same += fp8[t * K + a] == full[t * K + b];
    }
  }
  EXPECT_GT(double(same) / (T * K), 0.9);
}

TEST(IndexerFp8Test, DecodeSizedCallsAndOtherShapesStayFullPrecision) {
  auto backend = MakeBackend("cpu");
  ASSERT_TRUE(backend.ok());
  Backend& be = **backend;
  be.set_indexer_fp8(true);
  // 64 queries: below Backend::kFp8IndexerMinQueries.
  const Tensor q = Random({64, 8, 128}, 4), k = Random({200, 128}, 5), w = Random({64, 8}, 6, 0.2f);
  EXPECT_EQ(RunIndexer(be, q, k, w, 16), Reference(q.data<float>(), k.data<float>(), w, 64, 200, 8, 128, 16));
  // D = 64: the FP8 kernel takes D = 128 only.
  const Tensor q2 = Random({100, 8, 64}, 7), k2 = Random({200, 64}, 8), w2 = Random({100, 8}, 9, 0.2f);
  EXPECT_EQ(RunIndexer(be, q2, k2, w2, 16), Reference(q2.data<float>(), k2.data<float>(), w2, 100, 200, 8, 64, 16));
}

// Through a forward: the option changes the selection and nothing else. With index_topk 16 of up
// to 120 keys the logits move (this random 2-layer model is chaotic in its selection, so no
// closeness bound is meaningful here; kernels/indexer_topk_fp8_cuda_bench measures the overlap of
// the selections); with index_topk >= the sequence every key is attended either way and the logits
// are the same bits.
double ForwardChange(int64_t index_topk) {
  const nlohmann::json j = {
      {"model_type", "deepseek_v32"}, {"vocab_size", 96},          {"hidden_size", 64},
      {"num_hidden_layers", 2},       {"num_attention_heads", 4},  {"q_lora_rank", 32},
      {"kv_lora_rank", 32},           {"qk_nope_head_dim", 16},    {"qk_rope_head_dim", 8},
      {"v_head_dim", 16},             {"index_topk", index_topk},  {"index_n_heads", 4},
      {"index_head_dim", 128},        {"intermediate_size", 96},   {"first_k_dense_replace", 2},
      {"rope_theta", 10000.0},        {"max_position_embeddings", 4096},
  };
  auto config = ParseModelConfig(j, "test config");
  EXPECT_TRUE(config.ok()) << config.status().ToString();
  auto backend = MakeBackend("cpu");
  EXPECT_TRUE(backend.ok());
  auto model = DsaModel::FromParts(*config, RandomModelWeights(*config, 5), IndexPattern::AllFull(2), *backend);
  EXPECT_TRUE(model.ok()) << model.status().ToString();
  const std::vector<int32_t> tokens = DecodeTestTokens(3, 120, 96);
  auto off = model->Forward(tokens);
  (*backend)->set_indexer_fp8(true);
  auto on = model->Forward(tokens);
  EXPECT_TRUE(off.ok() && on.ok());
  return RelL2(on->logits, off->logits);
}

TEST(IndexerFp8Test, ForwardChangesOnlyTheSelection) {
  EXPECT_GT(ForwardChange(16), 0.0) << "the forward did not use the FP8 indexer";
  EXPECT_EQ(ForwardChange(128), 0.0) << "the FP8 option changed more than the selection";
}

}  // namespace
}  // namespace indexcache
