// Batched decode on CUDA (DsaModel::DecodeStep over a BatchedKvCache) against per-request decode on
// CUDA (the per-request KvCache path of Forward): the same bf16 backend both ways, so the
// differences are only those of GEMMs over B rows instead of one and any top-k ties they flip.
// Relative L2 of every request's logits <= kParityRelL2Bf16 (kernels/tolerances.h). On the HF
// fixtures (the generic sparse MLA kernel) and on a small model with V3.2's latent shape (d_qk 576,
// d_v 512: the wgmma sparse MLA kernel reading the pooled latents through offset indices), under
// all-F and patterns with Shared layers, prompts of different lengths below and above index_topk,
// with a request removed and another added between steps; a batch of one equals per-request
// decode bit for bit (the same GEMM shapes). Skips without a GPU.
#include <cmath>
#include <cstdio>
#include <string>
#include <vector>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "core/cuda_check.h"
#include "core/test_util.h"
#include "kernels/latent_fp8.h"
#include "kernels/tolerances.h"
#include "model/batched_kv_cache.h"
#include "model/config.h"
#include "model/decode_test_util.h"
#include "model/dsa_model.h"
#include "model/random_weights.h"

namespace indexcache {
namespace {

// Requests with `lengths` of prompt stepped `steps` times together; after the first step request 1
// leaves and a newcomer (prompt `lengths[1]`) takes its slot.
void ExpectBatchedMatchesAlone(const DsaModel& model, const IndexPattern* pattern, const std::vector<int64_t>& lengths,
                               int64_t steps, const std::string& name) {
  const int64_t V = model.config().vocab_size;
  int64_t cap = 0;
  for (int64_t n : lengths) cap = std::max(cap, n + steps);
  auto cache = BatchedKvCache::Create(model, cap * static_cast<int64_t>(lengths.size()), pattern);
  ASSERT_TRUE(cache.ok()) << cache.status().ToString();
  struct Req {
    int64_t id;
    std::vector<int32_t> next;
    std::vector<std::vector<float>> alone;
    size_t done = 0;
  };
  auto make = [&](int seed, int64_t n) {
    Req q;
    q.id = *cache->Add(cap);
    const std::vector<int32_t> all = DecodeTestTokens(seed, n + steps, V);
    const std::vector<int32_t> prompt(all.begin(), all.begin() + n);
    q.next.assign(all.begin() + n, all.end());
    if (n > 0) {
      EXPECT_TRUE(model.Prefill(&*cache, q.id, prompt).ok());
    }
    q.alone = DecodeAlone(model, pattern, prompt, q.next);
    return q;
  };
  std::vector<Req> live;
  for (size_t r = 0; r < lengths.size(); ++r) live.push_back(make(static_cast<int>(r), lengths[r]));
  double worst = 0;
  for (int64_t s = 0; s < steps; ++s) {
    if (s == 1 && live.size() > 1) {  // a request leaves, a new one takes its rows
      ASSERT_TRUE(cache->Remove(live[1].id).ok());
      live[1] = make(100, lengths[1]);
      live[1].done = 1;  // it joins the batch at its own second token
    }
    std::vector<int64_t> ids;
    std::vector<int32_t> tokens;
    for (const Req& q : live) ids.push_back(q.id), tokens.push_back(q.next[q.done]);
    if (s == 1 && live.size() > 1) {  // the newcomer's first token alone, to be at done = 1
      // B = 1 runs the same GEMM shapes as the per-request path: the same logits, bit for bit.
      auto first = model.DecodeStep({live[1].id}, {live[1].next[0]}, &*cache);
      ASSERT_TRUE(first.ok()) << first.status().ToString();
      const double single = RelL2(first->logits.data<float>(), live[1].alone[0].data(), V);
      EXPECT_LE(single, 1e-6) << name << ": a batch of one differs from per-request decode";
      std::printf("%s: batch of one against per-request decode: relative L2 %.3e\n", name.c_str(), single);
    }
    auto r = model.DecodeStep(ids, tokens, &*cache);
    ASSERT_TRUE(r.ok()) << r.status().ToString();
    for (size_t i = 0; i < live.size(); ++i) {
      Req& q = live[i];
      const double e = RelL2(r->logits.data<float>() + i * V, q.alone[q.done].data(), V);
      worst = std::max(worst, e);
      EXPECT_LE(e, kParityRelL2Bf16) << name << " request " << q.id << " step " << q.done;
      ++q.done;
    }
  }
  std::printf("%s: worst relative L2 of batched against per-request decode %.3e\n", name.c_str(), worst);
}

TEST(GpuBatchedDecodeTest, FixturesMatchPerRequestDecode) {
  if (!CudaDeviceAvailable()) GTEST_SKIP() << "no CUDA device";
  for (const std::string fixture : {"dsv32_moe_groups", "glm_shared_bf16", "dsv32_yarn_fp8"}) {
    auto model = DsaModel::Load("tests/data/" + fixture, std::nullopt, "cuda");
    ASSERT_TRUE(model.ok()) << model.status().ToString();
    ExpectBatchedMatchesAlone(*model, nullptr, {3, 22, 0, 9}, 4, fixture);
  }
}

TEST(GpuBatchedDecodeTest, V32LatentShapeMatchesPerRequestDecode) {
  if (!CudaDeviceAvailable()) GTEST_SKIP() << "no CUDA device";
  const nlohmann::json j = {
      {"model_type", "deepseek_v32"}, {"vocab_size", 512},          {"hidden_size", 512},
      {"num_hidden_layers", 4},       {"num_attention_heads", 16},  {"q_lora_rank", 128},
      {"kv_lora_rank", 512},          {"qk_nope_head_dim", 64},     {"qk_rope_head_dim", 64},
      {"v_head_dim", 64},             {"index_topk", 64},           {"index_n_heads", 8},
      {"index_head_dim", 128},        {"intermediate_size", 512},   {"first_k_dense_replace", 4},
      {"rope_theta", 10000.0},        {"max_position_embeddings", 4096},
  };
  auto config = ParseModelConfig(j, "test V3.2-latent config");
  ASSERT_TRUE(config.ok()) << config.status().ToString();
  auto backend = MakeBackend("cuda");
  ASSERT_TRUE(backend.ok());
  auto model = DsaModel::FromParts(*config, RandomModelWeights(*config, 7), IndexPattern::AllFull(4), *backend);
  ASSERT_TRUE(model.ok()) << model.status().ToString();
  for (const char* spec : {"FFFF", "FSSS", "FSFS"}) {
    const IndexPattern p = *IndexPattern::Parse(spec, 4);
    ExpectBatchedMatchesAlone(*model, &p, {5, 200, 63, 130, 1}, 4, std::string("v32-latent ") + spec);
  }
}

// The FP8 latent cache on CUDA: the pool's layer-0 rows are the CPU reference's quantisation of the
// full-precision cache's rows, byte for byte, and decode through it stays within the bound the CPU
// test measures (model/batched_fp8_cache_test.cc), on V3.2's latent split (4 blocks of 128 + rope
// 64) and the wgmma sparse MLA reading the gathered rows. Prompts stay below index_topk so the
// selection cannot flip between the two caches.
TEST(GpuBatchedDecodeTest, Fp8LatentCacheStoresQuantisedRowsAndStaysClose) {
  if (!CudaDeviceAvailable()) GTEST_SKIP() << "no CUDA device";
  const nlohmann::json j = {
      {"model_type", "deepseek_v32"}, {"vocab_size", 512},          {"hidden_size", 512},
      {"num_hidden_layers", 3},       {"num_attention_heads", 16},  {"q_lora_rank", 128},
      {"kv_lora_rank", 512},          {"qk_nope_head_dim", 64},     {"qk_rope_head_dim", 64},
      {"v_head_dim", 64},             {"index_topk", 64},           {"index_n_heads", 8},
      {"index_head_dim", 128},        {"intermediate_size", 512},   {"first_k_dense_replace", 3},
      {"rope_theta", 10000.0},        {"max_position_embeddings", 4096},
  };
  auto config = ParseModelConfig(j, "test V3.2-latent config");
  ASSERT_TRUE(config.ok()) << config.status().ToString();
  auto backend = MakeBackend("cuda");
  ASSERT_TRUE(backend.ok());
  auto model = DsaModel::FromParts(*config, RandomModelWeights(*config, 7), IndexPattern::AllFull(3), *backend);
  ASSERT_TRUE(model.ok()) << model.status().ToString();
  const int64_t V = 512, steps = 3;
  const std::vector<int64_t> lengths = {5, 50, 1, 33};
  BatchedKvCacheOptions options;
  options.fp8_latents = true;
  auto fp8 = BatchedKvCache::Create(*model, 400, nullptr, options);
  auto plain = BatchedKvCache::Create(*model, 400);
  ASSERT_TRUE(fp8.ok() && plain.ok());
  std::vector<int64_t> ids;
  std::vector<std::vector<int32_t>> next;
  for (size_t r = 0; r < lengths.size(); ++r) {
    const std::vector<int32_t> all = DecodeTestTokens(static_cast<int>(r), lengths[r] + steps, V);
    next.emplace_back(all.begin() + lengths[r], all.end());
    const int64_t a = *fp8->Add(60), b = *plain->Add(60);
    ids.push_back(a);
    ASSERT_TRUE(model->Prefill(&*fp8, a, {all.begin(), all.begin() + lengths[r]}).ok());
    ASSERT_TRUE(model->Prefill(&*plain, b, {all.begin(), all.begin() + lengths[r]}).ok());
  }
  double worst = 0;
  for (int64_t s = 0; s < steps; ++s) {
    std::vector<int32_t> tokens;
    for (const auto& n : next) tokens.push_back(n[s]);
    auto sa = model->DecodeStep(ids, tokens, &*fp8);
    auto sb = model->DecodeStep(ids, tokens, &*plain);
    ASSERT_TRUE(sa.ok()) << sa.status().ToString();
    ASSERT_TRUE(sb.ok()) << sb.status().ToString();
    for (size_t r = 0; r < ids.size(); ++r) {
      worst = std::max(worst, RelL2(sa->logits.data<float>() + r * V, sb->logits.data<float>() + r * V, V));
    }
  }
  std::printf("FP8 latent cache on CUDA: worst relative L2 against the bf16 cache %.3e\n", worst);
  EXPECT_GT(worst, 0.0);
  EXPECT_LE(worst, 0.15);
  // Layer 0's rows: the CPU quantisation of the bf16 cache's rows, byte for byte.
  const LatentFp8Layout& layout = fp8->latent_fp8_layout();
  const Tensor got = (*backend)->ToHost(fp8->latent[0]);
  const Tensor want_src = (*backend)->ToHost(plain->latent[0]);  // f32 of the bf16 values
  for (int64_t id : ids) {
    const BatchedKvCache::Slot* a = fp8->Find(id);
    const BatchedKvCache::Slot* b = plain->Find(id);
    std::vector<int32_t> rows(a->length);
    for (int64_t i = 0; i < a->length; ++i) rows[i] = static_cast<int32_t>(i);
    std::vector<uint8_t> want(a->length * layout.row_bytes());
    QuantizeLatentRowsCpu(want_src.data<float>() + b->base * 576, rows.data(), a->length, layout, want.data());
    const uint8_t* g = got.data<uint8_t>() + a->base * layout.row_bytes();
    for (size_t i = 0; i < want.size(); ++i) ASSERT_EQ(g[i], want[i]) << "request " << id << " byte " << i;
  }
}

}  // namespace
}  // namespace indexcache
