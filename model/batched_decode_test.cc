// Batched decode (model/batched_kv_cache.h, DsaModel::Prefill / DecodeStep) on the CPU reference:
// B requests of different lengths stepped together give, row by row, the logits of each request
// decoded alone through the per-request KvCache path; requests come and go between steps (their
// slots reused); overflow and bad input are errors that leave the cache as it was.
#include <algorithm>
#include <cmath>
#include <functional>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "core/safetensors.h"
#include "core/test_util.h"
#include "kernels/tolerances.h"
#include "model/batched_kv_cache.h"
#include "model/decode_test_util.h"
#include "model/dsa_model.h"

namespace indexcache {
namespace {

// 3 layers FFF, index_topk 16, MoE with expert groups.
const char kDsv32[] = "tests/data/dsv32_moe_groups";
// 3 layers FFF, index_topk 16, yarn rope, FP8 checkpoint.
const char kYarn[] = "tests/data/dsv32_yarn_fp8";
// 4 layers FSSF (layers 1-2 have no indexer weights), index_topk 12.
const char kGlm[] = "tests/data/glm_shared_bf16";

DsaModel Load(const char* dir) {
  auto model = DsaModel::Load(dir);
  EXPECT_TRUE(model.ok()) << model.status().ToString();
  return std::move(*model);
}

// Requests with prompts of `lengths` (some shorter than index_topk, some longer), stepped together
// `steps` times; every row of every step against the request decoded alone.
void ExpectBatchedEqualsAlone(const char* dir, const IndexPattern* pattern, const std::vector<int64_t>& lengths,
                              int64_t steps) {
  SCOPED_TRACE(std::string(dir) + " " + (pattern ? pattern->ToString() : "(checkpoint pattern)"));
  const DsaModel model = Load(dir);
  const int64_t V = model.config().vocab_size, B = static_cast<int64_t>(lengths.size());
  int64_t pool = 0;
  for (int64_t n : lengths) pool += n + steps + 3;  // slack: slots need not fill the pool
  auto cache = BatchedKvCache::Create(model, pool, pattern);
  ASSERT_TRUE(cache.ok()) << cache.status().ToString();
  for (int l = 0; l < model.config().num_layers; ++l) {
    EXPECT_EQ(cache->index_keys[l].empty(), !cache->pattern().is_full(l)) << "layer " << l;
  }
  std::vector<int64_t> ids;
  std::vector<std::vector<int32_t>> prompts, next;
  for (int64_t r = 0; r < B; ++r) {
    const std::vector<int32_t> all = DecodeTestTokens(static_cast<int>(r), lengths[r] + steps, V);
    prompts.emplace_back(all.begin(), all.begin() + lengths[r]);
    next.emplace_back(all.begin() + lengths[r], all.end());
    auto id = cache->Add(lengths[r] + steps + 1 + r);  // uneven capacities
    ASSERT_TRUE(id.ok()) << id.status().ToString();
    ids.push_back(*id);
    if (lengths[r] > 0) {
      ASSERT_TRUE(model.Prefill(&*cache, *id, prompts[r]).ok());
    }
    EXPECT_EQ(cache->Find(*id)->length, lengths[r]);
  }
  std::vector<std::vector<std::vector<float>>> alone;
  for (int64_t r = 0; r < B; ++r) alone.push_back(DecodeAlone(model, pattern, prompts[r], next[r]));
  for (int64_t s = 0; s < steps; ++s) {
    std::vector<int32_t> tokens;
    for (int64_t r = 0; r < B; ++r) tokens.push_back(next[r][s]);
    auto step = model.DecodeStep(ids, tokens, &*cache);
    ASSERT_TRUE(step.ok()) << step.status().ToString();
    ASSERT_EQ(step->logits.shape(), (Shape{B, V}));
    for (int64_t r = 0; r < B; ++r) {
      EXPECT_LE(RelL2(step->logits.data<float>() + r * V, alone[r][s].data(), V), kRelL2TolF32)
          << "request " << r << " (prompt " << lengths[r] << ") step " << s;
      EXPECT_EQ(cache->Find(ids[r])->length, lengths[r] + s + 1);
    }
  }
}

TEST(BatchedDecodeTest, AllFullEqualsEachRequestAlone) {
  // index_topk 16: prompts below it (every causal key attended) and well above it (sparse).
  ExpectBatchedEqualsAlone(kDsv32, nullptr, {3, 30, 0, 17, 9}, 4);
}

TEST(BatchedDecodeTest, YarnRopeAtEachRequestsOwnPosition) {
  ExpectBatchedEqualsAlone(kYarn, nullptr, {1, 25, 12}, 3);
}

TEST(BatchedDecodeTest, SharedLayersReuseTheIndicesBufferAndMatch) {
  ExpectBatchedEqualsAlone(kGlm, nullptr, {20, 4, 13, 27}, 3);  // FSSF from the checkpoint
  const IndexPattern fss = *IndexPattern::Parse("FSS", 3);
  ExpectBatchedEqualsAlone(kDsv32, &fss, {2, 19, 33}, 3);
}

TEST(BatchedDecodeTest, DecodeStepOfAllRequestsTakesThemInIdOrder) {
  const DsaModel model = Load(kDsv32);
  auto cache = BatchedKvCache::Create(model, 64);
  ASSERT_TRUE(cache.ok());
  const int64_t a = *cache->Add(20), b = *cache->Add(20);
  ASSERT_TRUE(model.Prefill(&*cache, a, DecodeTestTokens(0, 5, 256)).ok());
  ASSERT_TRUE(model.Prefill(&*cache, b, DecodeTestTokens(1, 7, 256)).ok());
  auto step = model.DecodeStep({11, 12}, &*cache);
  ASSERT_TRUE(step.ok()) << step.status().ToString();
  EXPECT_EQ(step->requests, (std::vector<int64_t>{a, b}));
  EXPECT_EQ(cache->Find(a)->length, 6);
  EXPECT_EQ(cache->Find(b)->length, 8);
}

// Requests join and leave between steps; a new request reuses a freed slot, and everyone's logits
// still equal their own decode alone.
TEST(BatchedDecodeTest, AddingAndRemovingRequestsBetweenSteps) {
  const DsaModel model = Load(kGlm);
  const int64_t V = model.config().vocab_size;
  auto cache = BatchedKvCache::Create(model, 3 * 40);
  ASSERT_TRUE(cache.ok());
  struct Req {
    int64_t id;
    std::vector<int32_t> prompt, next;
    size_t done = 0;
    std::vector<std::vector<float>> alone;
  };
  auto make = [&](int seed, int64_t prompt_len, int64_t steps) {
    Req q;
    auto id = cache->Add(40);
    EXPECT_TRUE(id.ok()) << id.status().ToString();
    q.id = *id;
    const std::vector<int32_t> all = DecodeTestTokens(seed, prompt_len + steps, V);
    q.prompt.assign(all.begin(), all.begin() + prompt_len);
    q.next.assign(all.begin() + prompt_len, all.end());
    if (prompt_len > 0) {
      EXPECT_TRUE(model.Prefill(&*cache, q.id, q.prompt).ok());
    }
    q.alone = DecodeAlone(model, nullptr, q.prompt, q.next);
    return q;
  };
  std::vector<Req> live = {make(0, 10, 6), make(1, 25, 6), make(2, 3, 6)};
  const int64_t middle_base = cache->Find(live[1].id)->base;
  auto step = [&]() {
    std::vector<int64_t> ids;
    std::vector<int32_t> tokens;
    for (const Req& q : live) ids.push_back(q.id), tokens.push_back(q.next[q.done]);
    auto r = model.DecodeStep(ids, tokens, &*cache);
    ASSERT_TRUE(r.ok()) << r.status().ToString();
    for (size_t i = 0; i < live.size(); ++i) {
      Req& q = live[i];
      EXPECT_LE(RelL2(r->logits.data<float>() + i * V, q.alone[q.done].data(), V), kRelL2TolF32)
          << "request " << q.id << " step " << q.done;
      ++q.done;
    }
  };
  step();
  step();
  // The middle request leaves; the pool is full, so the newcomer must get its rows.
  const int64_t gone = live[1].id;
  ASSERT_TRUE(cache->Remove(gone).ok());
  live.erase(live.begin() + 1);
  EXPECT_FALSE(cache->Has(gone));
  live.push_back(make(3, 14, 4));
  EXPECT_EQ(cache->Find(live.back().id)->base, middle_base);
  step();
  // A request with no prompt at all joins: its first token is decoded in the batch at position 0.
  ASSERT_TRUE(cache->Remove(live[0].id).ok());
  live.erase(live.begin());
  live.push_back(make(4, 0, 3));
  step();
  step();
  EXPECT_EQ(cache->num_requests(), 3);
}

TEST(BatchedDecodeTest, SlotAllocatorFirstFitAndMerging) {
  const DsaModel model = Load(kDsv32);
  auto cache = BatchedKvCache::Create(model, 10);
  ASSERT_TRUE(cache.ok());
  const int64_t a = *cache->Add(3), b = *cache->Add(3), c = *cache->Add(4);
  EXPECT_EQ(cache->Find(a)->base, 0);
  EXPECT_EQ(cache->Find(b)->base, 3);
  EXPECT_EQ(cache->Find(c)->base, 6);
  EXPECT_EQ(cache->free_rows(), 0);
  auto none = cache->Add(1);
  ASSERT_FALSE(none.ok());
  EXPECT_NE(none.status().message().find("no free range"), std::string::npos) << none.status().message();
  ASSERT_TRUE(cache->Remove(b).ok());
  EXPECT_FALSE(cache->Add(4).ok());  // 3 rows free
  ASSERT_TRUE(cache->Remove(a).ok());  // merges with b's rows: [0, 6)
  EXPECT_EQ(cache->largest_free_range(), 6);
  ASSERT_TRUE(cache->Remove(c).ok());  // everything merges: [0, 10)
  EXPECT_EQ(cache->largest_free_range(), 10);
  const int64_t d = *cache->Add(10);
  EXPECT_EQ(cache->Find(d)->base, 0);
  EXPECT_GT(d, c);  // ids are never reused
  EXPECT_FALSE(cache->Remove(a).ok());
  EXPECT_FALSE(cache->Add(0).ok());
  EXPECT_FALSE(cache->SetLength(d, 11).ok());
  EXPECT_FALSE(BatchedKvCache::Create(model, 0).ok());
  EXPECT_FALSE(BatchedKvCache::Create(model, BatchedKvCache::kMaxPoolRows + 1).ok());
}

TEST(BatchedDecodeTest, OverflowAndBadInputAreErrorsThatChangeNothing) {
  const DsaModel model = Load(kDsv32);
  auto cache = BatchedKvCache::Create(model, 32);
  ASSERT_TRUE(cache.ok());
  const int64_t small = *cache->Add(4), big = *cache->Add(20);
  ASSERT_TRUE(model.Prefill(&*cache, small, DecodeTestTokens(0, 3, 256)).ok());
  ASSERT_TRUE(model.Prefill(&*cache, big, DecodeTestTokens(1, 5, 256)).ok());
  // Prefill past a request's capacity.
  auto over = model.Prefill(&*cache, small, DecodeTestTokens(2, 2, 256));
  ASSERT_FALSE(over.ok());
  EXPECT_NE(over.status().message().find("request " + std::to_string(small)), std::string::npos);
  ASSERT_TRUE(model.DecodeStep({small, big}, {1, 2}, &*cache).ok());  // fills `small`: 4 of 4
  auto full = model.DecodeStep({small, big}, {1, 2}, &*cache);
  ASSERT_FALSE(full.ok());
  EXPECT_NE(full.status().message().find("request " + std::to_string(small) + " is full"), std::string::npos)
      << full.status().message();
  EXPECT_EQ(cache->Find(small)->length, 4);
  EXPECT_EQ(cache->Find(big)->length, 6);  // the failed step wrote nothing
  auto expect_error = [&](const std::vector<int64_t>& ids, const std::vector<int32_t>& tokens, const std::string& what) {
    auto r = model.DecodeStep(ids, tokens, &*cache);
    ASSERT_FALSE(r.ok()) << what;
    EXPECT_NE(r.status().message().find(what), std::string::npos) << r.status().message();
    EXPECT_EQ(cache->Find(big)->length, 6);
  };
  expect_error({big, big}, {1, 2}, "twice");
  expect_error({big, 77}, {1, 2}, "no request 77");
  expect_error({big}, {1, 2}, "2 tokens for 1 requests");
  expect_error({}, {}, "0 requests");
  expect_error({big}, {256}, "outside the vocabulary");
  expect_error({big}, {-1}, "outside the vocabulary");
  // Removed requests are gone; the others step on.
  ASSERT_TRUE(cache->Remove(small).ok());
  expect_error({small, big}, {1, 2}, "no request " + std::to_string(small));
  ASSERT_TRUE(model.DecodeStep({big}, {3}, &*cache).ok());
  EXPECT_EQ(cache->Find(big)->length, 7);
  // A cache of another model is refused.
  const DsaModel glm = Load(kGlm);
  auto other = BatchedKvCache::Create(glm, 8);
  ASSERT_TRUE(other.ok());
  const int64_t g = *other->Add(8);
  auto wrong = model.DecodeStep({g}, {1}, &*other);
  ASSERT_FALSE(wrong.ok());
  EXPECT_NE(wrong.status().message().find("another model"), std::string::npos) << wrong.status().message();
}

// A NaN in a layer is an error naming that layer, as in Forward; the step's requests keep their
// lengths (the rows it wrote lie past them and are overwritten by the next step).
TEST(BatchedDecodeTest, NonFiniteActivationsAreAnErrorNamingTheLayer) {
  auto config = LoadModelConfig(kGlm);
  auto ckpt = SafetensorsCheckpoint::Open(kGlm);
  ASSERT_TRUE(config.ok() && ckpt.ok());
  std::vector<bool> indexer_layers(config->num_layers);
  for (int l = 0; l < config->num_layers; ++l) indexer_layers[l] = config->pattern.is_full(l);
  auto weights = LoadModelWeights(*config, *ckpt, indexer_layers);
  ASSERT_TRUE(weights.ok());
  weights->layers[2].o(3, 5) = NAN;  // layer 2 (Shared) poisons the stream; layers 0-1 are fine
  IndexPattern pattern = config->pattern;
  auto model = DsaModel::FromParts(*config, std::move(*weights), pattern, std::shared_ptr<Backend>(MakeCpuBackend()));
  ASSERT_TRUE(model.ok()) << model.status().ToString();
  auto cache = BatchedKvCache::Create(*model, 16);
  ASSERT_TRUE(cache.ok());
  const int64_t a = *cache->Add(8), b = *cache->Add(8);
  auto r = model->DecodeStep({a, b}, {1, 2}, &*cache);
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find("layer 2 (model.layers.2.*)"), std::string::npos) << r.status().message();
  EXPECT_EQ(cache->Find(a)->length, 0);
  EXPECT_EQ(cache->Find(b)->length, 0);
}

}  // namespace
}  // namespace indexcache
