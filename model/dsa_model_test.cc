// The forward's hooks for the trainer and the pattern search: top-k capture and injection,
// attention statistics, starting and stopping at any layer, and pattern overrides.
#include <algorithm>
#include <cmath>
#include <numeric>
#include <vector>

#include <gtest/gtest.h>

#include "core/test_util.h"

#include <functional>

#include "data/token_array.h"
#include "model/dsa_model.h"

namespace indexcache {
namespace {

// 3 layers, FFF, index_topk 16, 40 tokens per row.
const char kDsv32[] = "tests/data/dsv32_moe_groups";
// 4 layers, FSSF (layers 1-2 have no indexer weights), index_topk 12, 36 tokens.
const char kGlm[] = "tests/data/glm_shared_bf16";

struct Loaded {
  DsaModel model;
  std::vector<int32_t> tokens;
};

Loaded Load(const char* dir) {
  auto model = DsaModel::Load(dir);
  EXPECT_TRUE(model.ok()) << model.status().ToString();
  auto tokens = ReadTokenArray(std::string(dir) + "/tokens.npy", model->config().vocab_size);
  EXPECT_TRUE(tokens.ok()) << tokens.status().ToString();
  return {std::move(*model), tokens->Row(0)};
}

double MaxAbsDiff(const Tensor& a, const Tensor& b) {
  EXPECT_EQ(a.shape(), b.shape());
  double d = 0;
  for (int64_t i = 0; i < a.numel(); ++i) d = std::max(d, double(std::fabs(a.data<float>()[i] - b.data<float>()[i])));
  return d;
}

bool SameInts(const Tensor& a, const Tensor& b) {
  return a.shape() == b.shape() && std::equal(a.data<int32_t>(), a.data<int32_t>() + a.numel(), b.data<int32_t>());
}

TEST(DsaModelTest, StartAtAnyLayerFromCachedActivations) {
  Loaded m = Load(kGlm);
  ForwardOptions full;
  full.trace.hidden_in = full.trace.topk = true;
  auto ref = m.model.Forward(m.tokens, full);
  ASSERT_TRUE(ref.ok());
  for (int start = 1; start < 4; ++start) {
    ForwardOptions opts;
    opts.start_layer = start;
    opts.hidden_in = ref->layers[start].hidden_in;
    // The indices buffer entering `start` is what the previous layer attended.
    opts.initial_topk = ref->layers[start - 1].topk;
    auto r = m.model.Forward(m.tokens, opts);
    ASSERT_TRUE(r.ok()) << r.status().ToString();
    EXPECT_EQ(MaxAbsDiff(r->logits, ref->logits), 0.0) << "start " << start;
  }
}

TEST(DsaModelTest, StartAtSharedLayerNeedsTheIndicesBuffer) {
  Loaded m = Load(kGlm);
  ForwardOptions full;
  full.trace.hidden_in = true;
  auto ref = m.model.Forward(m.tokens, full);
  ForwardOptions opts;
  opts.start_layer = 1;  // Shared
  opts.hidden_in = ref->layers[1].hidden_in;
  auto r = m.model.Forward(m.tokens, opts);
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find("Shared"), std::string::npos) << r.status().message();
}

TEST(DsaModelTest, StopEarlyReturnsTheStreamAndLaterStartContinuesIt) {
  Loaded m = Load(kDsv32);
  auto ref = m.model.Forward(m.tokens);
  ForwardOptions first;
  first.end_layer = 2;
  auto a = m.model.Forward(m.tokens, first);
  ASSERT_TRUE(a.ok());
  EXPECT_TRUE(a->logits.empty());
  ForwardOptions second;
  second.start_layer = 2;
  second.hidden_in = a->hidden_out;
  second.initial_topk = a->topk;
  auto b = m.model.Forward(m.tokens, second);
  ASSERT_TRUE(b.ok());
  EXPECT_EQ(MaxAbsDiff(b->logits, ref->logits), 0.0);
}

TEST(DsaModelTest, InjectingCapturedTopkReproducesAndOtherTopkChangesLogits) {
  Loaded m = Load(kDsv32);
  ForwardOptions capture;
  capture.trace.topk = true;
  auto ref = m.model.Forward(m.tokens, capture);
  ASSERT_TRUE(ref.ok());
  const int L = m.model.pattern().num_layers();

  ForwardOptions same;
  for (int l = 0; l < L; ++l) same.inject_topk.push_back(ref->layers[l].topk);
  auto r = m.model.Forward(m.tokens, same);
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(MaxAbsDiff(r->logits, ref->logits), 0.0);

  // Injecting the LAST-k causal keys into layer 1 must change the result.
  const int64_t T = m.tokens.size(), K = m.model.config().index_topk;
  Tensor recent = Tensor::Zeros(DType::kI32, {T, K});
  for (int64_t t = 0; t < T; ++t) {
    for (int64_t j = 0; j < K; ++j) recent.data<int32_t>()[t * K + j] = t - j >= 0 ? static_cast<int32_t>(t - j) : -1;
  }
  ForwardOptions other;
  other.inject_topk.resize(L);
  other.inject_topk[1] = recent;
  other.trace.topk = true;
  auto o = m.model.Forward(m.tokens, other);
  ASSERT_TRUE(o.ok());
  EXPECT_GT(MaxAbsDiff(o->logits, ref->logits), 1e-3);
  EXPECT_TRUE(SameInts(o->layers[1].topk, recent));
  EXPECT_TRUE(SameInts(o->layers[0].topk, ref->layers[0].topk));
}

TEST(DsaModelTest, SharedLayersReuseTheirSourceAndPatternChangesLogits) {
  Loaded m = Load(kDsv32);
  IndexPattern fss = *IndexPattern::Parse("FSS", 3);
  ForwardOptions opts;
  opts.pattern = &fss;
  opts.trace.topk = true;
  auto shared = m.model.Forward(m.tokens, opts);
  ASSERT_TRUE(shared.ok());
  EXPECT_TRUE(SameInts(shared->layers[1].topk, shared->layers[0].topk));
  EXPECT_TRUE(SameInts(shared->layers[2].topk, shared->layers[0].topk));
  auto full = m.model.Forward(m.tokens);
  EXPECT_GT(MaxAbsDiff(shared->logits, full->logits), 1e-4);

  // FSF: layer 2 runs its own indexer again.
  IndexPattern fsf = *IndexPattern::Parse("FSF", 3);
  ForwardOptions opts2;
  opts2.pattern = &fsf;
  opts2.trace.topk = true;
  auto r = m.model.Forward(m.tokens, opts2);
  ForwardOptions all;
  all.trace.topk = true;
  auto f = m.model.Forward(m.tokens, all);
  // Layer 2's input differs (layer 1 attended other keys), but layer 0 is identical.
  EXPECT_TRUE(SameInts(r->layers[0].topk, f->layers[0].topk));
  EXPECT_TRUE(SameInts(r->layers[1].topk, r->layers[0].topk));
}

TEST(DsaModelTest, PatternNeedingMissingIndexerIsRejected) {
  Loaded m = Load(kGlm);
  IndexPattern all = IndexPattern::AllFull(4);
  ForwardOptions opts;
  opts.pattern = &all;
  auto r = m.model.Forward(m.tokens, opts);
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find("layer 1"), std::string::npos) << r.status().message();
}

TEST(DsaModelTest, AttentionTraceRebuildsNormalisedDistributions) {
  Loaded m = Load(kDsv32);
  ForwardOptions opts;
  opts.trace.attention = opts.trace.topk = opts.trace.indexer_inputs = true;
  auto r = m.model.Forward(m.tokens, opts);
  ASSERT_TRUE(r.ok());
  const ModelConfig& c = m.model.config();
  const int64_t T = m.tokens.size(), H = c.num_heads, D = c.latent_dim();
  for (int l = 0; l < 3; ++l) {
    const LayerTrace& tr = r->layers[l];
    ASSERT_EQ(tr.attn_q.shape(), (Shape{T, H, D}));
    ASSERT_EQ(tr.attn_kv.shape(), (Shape{T, D}));
    ASSERT_EQ(tr.q_latent.shape(), (Shape{T, c.q_lora_rank}));
    EXPECT_FLOAT_EQ(tr.attn_scale, static_cast<float>(c.softmax_scale()));
    const int64_t K = tr.topk.size(1);
    for (int64_t t = 0; t < T; ++t) {
      for (int64_t h = 0; h < H; ++h) {
        // p_j = exp(scale * q.kv_j - lse) over the selected keys must sum to 1.
        double sum = 0;
        for (int64_t j = 0; j < K; ++j) {
          const int32_t s = tr.topk.data<int32_t>()[t * K + j];
          if (s < 0) continue;
          ASSERT_LE(s, t);
          double dot = 0;
          for (int64_t d = 0; d < D; ++d) dot += double(tr.attn_q.data<float>()[(t * H + h) * D + d]) * tr.attn_kv.data<float>()[s * D + d];
          sum += std::exp(tr.attn_scale * dot - tr.attn_lse.data<float>()[t * H + h]);
        }
        EXPECT_NEAR(sum, 1.0, 1e-4) << "layer " << l << " query " << t << " head " << h;
      }
    }
  }
}

TEST(DsaModelTest, RowsShorterThanTopkAttendEveryCausalKey) {
  Loaded m = Load(kDsv32);
  ForwardOptions opts;
  opts.trace.topk = true;
  auto r = m.model.Forward(m.tokens, opts);
  const int64_t K = m.model.config().index_topk;
  for (int64_t t = 0; t < K; ++t) {
    std::vector<int32_t> row(r->layers[0].topk.data<int32_t>() + t * K, r->layers[0].topk.data<int32_t>() + (t + 1) * K);
    std::vector<int32_t> valid;
    for (int32_t s : row) if (s >= 0) valid.push_back(s);
    std::sort(valid.begin(), valid.end());
    std::vector<int32_t> want(t + 1);
    std::iota(want.begin(), want.end(), 0);
    EXPECT_EQ(valid, want) << "query " << t;
  }
}

TEST(DsaModelTest, ParameterCountMatchesCheckpoint) {
  Loaded m = Load(kGlm);
  // 304,600 parameters in the checkpoint (see `indexcache info`), all loaded.
  EXPECT_EQ(m.model.ParameterCount(), 304600);
}

}  // namespace
}  // namespace indexcache

namespace indexcache {
namespace {

double MaxRelRowDiff(const Tensor& a, int64_t a_row, const Tensor& b, int64_t b_row, int64_t rows) {
  const int64_t V = a.size(1);
  double num = 0, den = 0;
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t v = 0; v < V; ++v) {
      const double x = a.data<float>()[(a_row + r) * V + v], y = b.data<float>()[(b_row + r) * V + v];
      num += (x - y) * (x - y);
      den += y * y;
    }
  }
  return std::sqrt(num / den);
}

// Prefill of a prefix, then one token at a time, must give the rows of one long prefill.
void ExpectDecodeMatchesPrefill(const char* dir, int64_t prefix, const IndexPattern* pattern) {
  auto model = DsaModel::Load(dir);
  ASSERT_TRUE(model.ok()) << model.status().ToString();
  auto tokens = ReadTokenArray(std::string(dir) + "/tokens.npy", model->config().vocab_size);
  const std::vector<int32_t> seq = tokens->Row(0);
  const int64_t T = seq.size();
  ForwardOptions full;
  full.pattern = pattern;
  auto ref = model->Forward(seq, full);
  ASSERT_TRUE(ref.ok()) << ref.status().ToString();

  auto cache = model->NewCache(T, pattern);
  ASSERT_TRUE(cache.ok()) << cache.status().ToString();
  for (int l = 0; l < model->config().num_layers; ++l) {
    EXPECT_EQ(cache->index_keys[l].empty(), !cache->pattern.is_full(l)) << "layer " << l;
  }
  ForwardOptions step;
  step.cache = &*cache;
  auto pre = model->Forward(std::vector<int32_t>(seq.begin(), seq.begin() + prefix), step);
  ASSERT_TRUE(pre.ok()) << pre.status().ToString();
  EXPECT_LE(MaxRelRowDiff(pre->logits, 0, ref->logits, 0, prefix), 1e-5);
  for (int64_t t = prefix; t < T; ++t) {
    auto r = model->Forward({seq[t]}, step);
    ASSERT_TRUE(r.ok()) << r.status().ToString();
    EXPECT_LE(MaxRelRowDiff(r->logits, 0, ref->logits, t, 1), 1e-5) << dir << " position " << t;
  }
  EXPECT_EQ(cache->length, T);
  auto over = model->Forward({seq[0]}, step);
  EXPECT_FALSE(over.ok());  // the cache is full
}

TEST(DecodeTest, PrefillThenDecodeEqualsOnePrefill) {
  // Prefix shorter than index_topk (16), then decode through the sparse regime.
  ExpectDecodeMatchesPrefill(kDsv32, 5, nullptr);
}

TEST(DecodeTest, SharedLayersKeepNoIndexerKeysAndStillMatch) {
  ExpectDecodeMatchesPrefill(kGlm, 20, nullptr);  // FSSF from the checkpoint
  IndexPattern fss = *IndexPattern::Parse("FSS", 3);
  ExpectDecodeMatchesPrefill(kDsv32, 17, &fss);
}

TEST(DecodeTest, ChunkedPrefillEqualsOnePrefill) {
  auto model = DsaModel::Load(kDsv32);
  auto tokens = ReadTokenArray(std::string(kDsv32) + "/tokens.npy", model->config().vocab_size);
  const std::vector<int32_t> seq = tokens->Row(1);
  auto ref = model->Forward(seq);
  auto cache = model->NewCache(64);
  ForwardOptions opts;
  opts.cache = &*cache;
  int64_t done = 0;
  for (int64_t chunk : {7, 13, 20}) {
    auto r = model->Forward(std::vector<int32_t>(seq.begin() + done, seq.begin() + done + chunk), opts);
    ASSERT_TRUE(r.ok()) << r.status().ToString();
    EXPECT_LE(MaxRelRowDiff(r->logits, 0, ref->logits, done, chunk), 1e-5) << "chunk at " << done;
    done += chunk;
  }
}

// Issue 12: non-finite results exited 0 ("loss nan", generate printing 0 0 0), and a NaN
// inside a layer came out as finite wrong logits. The forward fails naming the first layer.
StatusOr<DsaModel> WithEditedWeights(const char* dir, const std::function<void(ModelWeights*)>& edit) {
  ASSIGN_OR_RETURN(ModelConfig config, LoadModelConfig(dir));
  ASSIGN_OR_RETURN(SafetensorsCheckpoint ckpt, SafetensorsCheckpoint::Open(dir));
  std::vector<bool> indexer_layers(config.num_layers);
  for (int l = 0; l < config.num_layers; ++l) indexer_layers[l] = config.pattern.is_full(l);
  ASSIGN_OR_RETURN(ModelWeights weights, LoadModelWeights(config, ckpt, indexer_layers));
  edit(&weights);
  IndexPattern pattern = config.pattern;
  return DsaModel::FromParts(std::move(config), std::move(weights), std::move(pattern),
                             std::shared_ptr<Backend>(MakeCpuBackend()));
}

TEST(DsaModelTest, NonFiniteActivationsAreAnErrorNamingTheFirstLayer) {
  const std::vector<int32_t> tokens = Load(kGlm).tokens;
  // A NaN in layer 2's attention output projection: layers 0 and 1 are fine.
  auto model = WithEditedWeights(kGlm, [](ModelWeights* w) { w->layers[2].o(3, 5) = NAN; });
  ASSERT_TRUE(model.ok()) << model.status().ToString();
  auto r = model->Forward(tokens);
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find("layer 2 (model.layers.2.*)"), std::string::npos) << r.status().ToString();
  EXPECT_NE(r.status().message().find(kGlm), std::string::npos) << r.status().ToString();
  // A NaN in the queries (q_b) of layer 1: sparse MLA must not turn it into finite output.
  model = WithEditedWeights(kGlm, [](ModelWeights* w) { w->layers[1].q_b.row(0).setConstant(NAN); });
  ASSERT_TRUE(model.ok());
  r = model->Forward(tokens);
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find("layer 1 "), std::string::npos) << r.status().ToString();
  // A NaN final norm: every layer is finite, the logits are not.
  model = WithEditedWeights(kGlm, [](ModelWeights* w) { w->final_norm(0) = NAN; });
  ASSERT_TRUE(model.ok());
  r = model->Forward(tokens);
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find("model.norm.weight"), std::string::npos) << r.status().ToString();
  // And a clean model right after is unaffected (the record is per forward).
  Loaded clean = Load(kGlm);
  EXPECT_TRUE(clean.model.Forward(tokens).ok());
}

}  // namespace
}  // namespace indexcache

namespace indexcache {
namespace {


// Row chunks (the forward's bounded-memory mode) compute the same model: logits, the top-k of
// every layer and every trace, whatever the chunk size, including chunks that do not divide T
// and a single-row chunk; with and without a decode cache.
TEST(DsaModelChunkTest, ChunkedForwardEqualsTheWholeSequence) {
  for (const char* dir : {kDsv32, kGlm}) {
    Loaded m = Load(dir);
    const int64_t T = static_cast<int64_t>(m.tokens.size());
    ForwardOptions whole;
    whole.chunk_rows = T;
    whole.trace.topk = whole.trace.attention = whole.trace.indexer_inputs = true;
    auto ref = m.model.Forward(m.tokens, whole);
    ASSERT_TRUE(ref.ok()) << ref.status().ToString();
    for (int64_t chunk : {int64_t{1}, int64_t{7}, T - 1}) {
      ForwardOptions opts = whole;
      opts.chunk_rows = chunk;
      auto r = m.model.Forward(m.tokens, opts);
      ASSERT_TRUE(r.ok()) << r.status().ToString();
      EXPECT_LE(RelL2(r->logits, ref->logits), 1e-5) << dir << " chunk " << chunk;
      for (int l = 0; l < m.model.config().num_layers; ++l) {
        EXPECT_TRUE(SameInts(r->layers[l].topk, ref->layers[l].topk)) << dir << " layer " << l << " chunk " << chunk;
        EXPECT_LE(RelL2(r->layers[l].attn_q, ref->layers[l].attn_q), 1e-5) << dir << " layer " << l;
        EXPECT_LE(RelL2(r->layers[l].attn_lse, ref->layers[l].attn_lse), 1e-5) << dir << " layer " << l;
        EXPECT_LE(RelL2(r->layers[l].attn_kv, ref->layers[l].attn_kv), 1e-5) << dir << " layer " << l;
        EXPECT_EQ(r->layers[l].indexer_x.empty(), !m.model.pattern().is_full(l));
        if (m.model.pattern().is_full(l)) {
          EXPECT_LE(RelL2(r->layers[l].q_latent, ref->layers[l].q_latent), 1e-5) << dir << " layer " << l;
        }
      }
    }
    // A cached prefill in chunks, then one more token, equals the uncached forward's last row.
    auto cache = m.model.NewCache(T);
    ASSERT_TRUE(cache.ok());
    ForwardOptions cached;
    cached.cache = &*cache;
    cached.chunk_rows = 5;
    const std::vector<int32_t> head(m.tokens.begin(), m.tokens.end() - 1);
    ASSERT_TRUE(m.model.Forward(head, cached).ok());
    auto last = m.model.Forward({m.tokens.back()}, cached);
    ASSERT_TRUE(last.ok()) << last.status().ToString();
    const int64_t V = m.model.config().vocab_size;
    Tensor ref_last = Tensor::Zeros(DType::kF32, {1, V});
    std::copy(ref->logits.data<float>() + (T - 1) * V, ref->logits.data<float>() + T * V, ref_last.data<float>());
    EXPECT_LE(RelL2(last->logits, ref_last), 1e-5) << dir;
  }
}

// attention_inputs keeps q_latent and the latents; AbsorbedQueries rebuilds attn_q from them in
// any row range.
TEST(DsaModelChunkTest, AbsorbedQueriesRebuildTheTracedQueries) {
  Loaded m = Load(kGlm);
  ForwardOptions opts;
  opts.trace.attention = opts.trace.attention_inputs = true;
  auto r = m.model.Forward(m.tokens, opts);
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  const ModelConfig& c = m.model.config();
  const int64_t T = static_cast<int64_t>(m.tokens.size());
  for (int l = 0; l < c.num_layers; ++l) {
    const LayerTrace& tr = r->layers[l];
    ASSERT_FALSE(tr.q_latent.empty()) << l;
    for (auto [t0, t1] : {std::pair<int64_t, int64_t>{0, T}, {5, 17}, {T - 1, T}}) {
      Tensor q_abs = Tensor::Zeros(DType::kF32, {t1 - t0, c.num_heads, c.latent_dim()});
      ASSERT_TRUE(m.model.AbsorbedQueries(l, tr.q_latent.Slice0(t0, t1), t0, &q_abs).ok());
      Tensor want = Tensor::Zeros(DType::kF32, {t1 - t0, c.num_heads, c.latent_dim()});
      std::copy(tr.attn_q.Slice0(t0, t1).data<float>(), tr.attn_q.Slice0(t0, t1).data<float>() + want.numel(),
                want.data<float>());
      EXPECT_LE(RelL2(q_abs, want), 1e-6) << "layer " << l << " rows " << t0 << ".." << t1;
    }
  }
  Tensor wrong = Tensor::Zeros(DType::kF32, {3, c.num_heads, c.latent_dim() + 1});
  EXPECT_FALSE(m.model.AbsorbedQueries(0, r->layers[0].q_latent.Slice0(0, 3), 0, &wrong).ok());
}

}  // namespace
}  // namespace indexcache
