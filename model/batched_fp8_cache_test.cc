// The FP8 latent option of the batched decode cache (BatchedKvCacheOptions::fp8_latents) on the
// CPU reference: the pool holds exactly the quantised latents (checked byte for byte on layer 0,
// whose latents depend on the tokens only), decode through it stays close to decode through the
// full-precision cache, a prompt prefilled in two parts stores the same bytes as in one, and
// models whose latent split the format does not take are refused by name.
#include <cstdint>
#include <string>
#include <vector>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "core/test_util.h"
#include "kernels/latent_fp8.h"
#include "model/batched_kv_cache.h"
#include "model/config.h"
#include "model/decode_test_util.h"
#include "model/dsa_model.h"
#include "model/random_weights.h"

namespace indexcache {
namespace {

// e4m3 keeps 3 mantissa bits (up to 2^-4 relative rounding per latent value); through attention,
// three layers and the LM head of this random model the logits move by up to 0.074 relative L2
// (measured; printed below), so 0.15 bounds it with margin, while wrong reads land well above it:
// dropping the rope part measured 0.32-0.54, a gather one row off 0.26-0.54.
constexpr double kFp8CacheLogitsRelL2 = 0.15;

// kv_lora_rank 128 (one FP8 block), 3 layers. index_topk 64 is above every context here, so each
// query attends all its keys in both caches: the selection cannot flip between them and the
// logits differ by the quantisation alone (a random model with flips amplifies that chaotically).
DsaModel SmallModel() {
  const nlohmann::json j = {
      {"model_type", "deepseek_v32"}, {"vocab_size", 96},          {"hidden_size", 64},
      {"num_hidden_layers", 3},       {"num_attention_heads", 4},  {"q_lora_rank", 32},
      {"kv_lora_rank", 128},          {"qk_nope_head_dim", 16},    {"qk_rope_head_dim", 8},
      {"v_head_dim", 16},             {"index_topk", 64},          {"index_n_heads", 4},
      {"index_head_dim", 32},         {"intermediate_size", 96},   {"first_k_dense_replace", 3},
      {"rope_theta", 10000.0},        {"max_position_embeddings", 4096},
  };
  auto config = ParseModelConfig(j, "test config");
  EXPECT_TRUE(config.ok()) << config.status().ToString();
  auto backend = MakeBackend("cpu");
  EXPECT_TRUE(backend.ok());
  auto model = DsaModel::FromParts(*config, RandomModelWeights(*config, 3), IndexPattern::AllFull(3), *backend);
  EXPECT_TRUE(model.ok()) << model.status().ToString();
  return std::move(*model);
}

// The pool's layer-0 rows of `id` in the FP8 cache equal quantising the plain cache's rows.
void ExpectLayer0Quantised(const DsaModel& model, const BatchedKvCache& fp8, int64_t fp8_id,
                           const BatchedKvCache& plain, int64_t plain_id) {
  const LatentFp8Layout& layout = fp8.latent_fp8_layout();
  const BatchedKvCache::Slot* a = fp8.Find(fp8_id);
  const BatchedKvCache::Slot* b = plain.Find(plain_id);
  ASSERT_EQ(a->length, b->length);
  std::vector<int32_t> rows(a->length);
  for (int64_t i = 0; i < a->length; ++i) rows[i] = static_cast<int32_t>(i);
  std::vector<uint8_t> want(a->length * layout.row_bytes());
  QuantizeLatentRowsCpu(plain.latent[0].data<float>() + b->base * model.config().latent_dim(), rows.data(), a->length,
                        layout, want.data());
  const uint8_t* got = fp8.latent[0].data<uint8_t>() + a->base * layout.row_bytes();
  for (size_t i = 0; i < want.size(); ++i) {
    ASSERT_EQ(got[i], want[i]) << "byte " << i % layout.row_bytes() << " of row " << i / layout.row_bytes();
  }
}

TEST(BatchedFp8CacheTest, PoolHoldsQuantisedLatentsAndDecodeStaysClose) {
  const DsaModel model = SmallModel();
  const int64_t V = model.config().vocab_size;
  const std::vector<int64_t> lengths = {3, 30, 0, 17, 9};
  const int64_t steps = 4;
  BatchedKvCacheOptions fp8_options;
  fp8_options.fp8_latents = true;
  auto fp8 = BatchedKvCache::Create(model, 300, nullptr, fp8_options);
  auto plain = BatchedKvCache::Create(model, 300);
  ASSERT_TRUE(fp8.ok()) << fp8.status().ToString();
  ASSERT_TRUE(plain.ok());
  EXPECT_TRUE(fp8->fp8_latents());
  EXPECT_EQ(fp8->latent[0].dtype(), DType::kU8);
  EXPECT_EQ(fp8->latent[0].size(1), 128 + 4 + 2 * 8);
  std::vector<int64_t> ids;
  std::vector<std::vector<int32_t>> next;
  for (size_t r = 0; r < lengths.size(); ++r) {
    const std::vector<int32_t> all = DecodeTestTokens(static_cast<int>(r), lengths[r] + steps, V);
    const std::vector<int32_t> prompt(all.begin(), all.begin() + lengths[r]);
    next.emplace_back(all.begin() + lengths[r], all.end());
    const int64_t a = *fp8->Add(lengths[r] + steps + 2), b = *plain->Add(lengths[r] + steps + 2);
    ASSERT_EQ(a, b);
    ids.push_back(a);
    if (!prompt.empty()) {
      auto pa = model.Prefill(&*fp8, a, prompt);
      auto pb = model.Prefill(&*plain, b, prompt);
      ASSERT_TRUE(pa.ok()) << pa.status().ToString();
      ASSERT_TRUE(pb.ok());
      // The prompt's own attention runs at full precision in both: the same logits.
      EXPECT_LE(RelL2(pa->logits, pb->logits), 1e-6);
    }
  }
  double worst = 0;
  for (int64_t s = 0; s < steps; ++s) {
    std::vector<int32_t> tokens;
    for (const auto& n : next) tokens.push_back(n[s]);
    auto sa = model.DecodeStep(ids, tokens, &*fp8);
    auto sb = model.DecodeStep(ids, tokens, &*plain);
    ASSERT_TRUE(sa.ok()) << sa.status().ToString();
    ASSERT_TRUE(sb.ok());
    for (size_t r = 0; r < ids.size(); ++r) {
      const double e = RelL2(sa->logits.data<float>() + r * V, sb->logits.data<float>() + r * V, V);
      worst = std::max(worst, e);
      EXPECT_LE(e, kFp8CacheLogitsRelL2) << "request " << r << " step " << s;
    }
  }
  std::printf("FP8 latent cache: worst relative L2 of the logits against the full-precision cache %.3e\n", worst);
  EXPECT_GT(worst, 0.0);  // the FP8 rows are what the step read
  for (int64_t id : ids) ExpectLayer0Quantised(model, *fp8, id, *plain, id);
}

TEST(BatchedFp8CacheTest, PrefillInTwoPartsStoresTheSameBytes) {
  const DsaModel model = SmallModel();
  const std::vector<int32_t> prompt = DecodeTestTokens(7, 40, model.config().vocab_size);
  BatchedKvCacheOptions options;
  options.fp8_latents = true;
  auto fp8 = BatchedKvCache::Create(model, 100, nullptr, options);
  auto plain = BatchedKvCache::Create(model, 100);
  ASSERT_TRUE(fp8.ok() && plain.ok());
  const int64_t a = *fp8->Add(50), b = *plain->Add(50);
  ASSERT_TRUE(model.Prefill(&*fp8, a, {prompt.begin(), prompt.begin() + 25}).ok());
  auto second = model.Prefill(&*fp8, a, {prompt.begin() + 25, prompt.end()});
  ASSERT_TRUE(second.ok()) << second.status().ToString();
  auto whole = model.Prefill(&*plain, b, prompt);
  ASSERT_TRUE(whole.ok());
  EXPECT_EQ(fp8->Find(a)->length, 40);
  ExpectLayer0Quantised(model, *fp8, a, *plain, b);
  // The second part read the first part's latents dequantised: close, not equal.
  const int64_t V = model.config().vocab_size;
  const double e = RelL2(second->logits.data<float>(), whole->logits.data<float>() + 25 * V, 15 * V);
  EXPECT_GT(e, 0.0);
  EXPECT_LE(e, kFp8CacheLogitsRelL2);
}

TEST(BatchedFp8CacheTest, NoActivationViewButIndexKeyViews) {
  const DsaModel model = SmallModel();
  BatchedKvCacheOptions options;
  options.fp8_latents = true;
  auto cache = BatchedKvCache::Create(model, 64, nullptr, options);
  ASSERT_TRUE(cache.ok());
  const int64_t id = *cache->Add(10);
  const StatusOr<KvCache> view = cache->View(id);
  ASSERT_FALSE(view.ok());
  EXPECT_NE(view.status().message().find("FP8"), std::string::npos);
  auto keys = cache->IndexKeyViews(id);
  ASSERT_TRUE(keys.ok());
  EXPECT_EQ((*keys)[0].size(0), 10);
  EXPECT_FALSE(cache->IndexKeyViews(id + 1).ok());
}

TEST(BatchedFp8CacheTest, ALatentSplitTheFormatCannotHoldIsRefusedByName) {
  auto model = DsaModel::Load("tests/data/dsv32_moe_groups");  // kv_lora_rank 32
  ASSERT_TRUE(model.ok());
  BatchedKvCacheOptions options;
  options.fp8_latents = true;
  const auto cache = BatchedKvCache::Create(*model, 64, nullptr, options);
  ASSERT_FALSE(cache.ok());
  EXPECT_NE(cache.status().message().find("kv_lora_rank"), std::string::npos) << cache.status().message();
}

}  // namespace
}  // namespace indexcache
