// Loading a pipeline stage's layers only: each stage holds its own tensors (embedding on the
// first, final norm and LM head on the last), and chaining the stages' forwards, with the stream
// and the indices buffer handed from one to the next, gives the whole model's losses bit for bit.
#include <cstring>
#include <vector>

#include <gtest/gtest.h>

#include "data/token_array.h"
#include "model/dsa_model.h"

namespace indexcache {
namespace {

// 4 layers, FSSF (layers 1-2 have no indexer weights), index_topk 12, 36 tokens.
const char kGlm[] = "tests/data/glm_shared_bf16";

TEST(LayerRangeTest, StagesLoadOnlyTheirTensors) {
  auto first = DsaModel::Load(kGlm, std::nullopt, "cpu", "--pattern", LayerRange{0, 2});
  auto last = DsaModel::Load(kGlm, std::nullopt, "cpu", "--pattern", LayerRange{2, 4});
  ASSERT_TRUE(first.ok() && last.ok());
  const ModelWeights& a = first->weights();
  const ModelWeights& b = last->weights();
  EXPECT_GT(a.embed.size(), 0);
  EXPECT_EQ(a.lm_head.size(), 0);
  EXPECT_EQ(b.embed.size(), 0);
  EXPECT_GT(b.lm_head.size(), 0);
  EXPECT_TRUE(a.layers[1].loaded);
  EXPECT_FALSE(a.layers[2].loaded);
  EXPECT_EQ(a.layers[3].q_a.size(), 0);
  EXPECT_TRUE(a.layers[3].has_indexer);  // known from the shard headers: another stage's Full layer
  EXPECT_FALSE(b.layers[0].loaded);
  EXPECT_TRUE(b.layers[0].has_indexer);
  auto whole = DsaModel::Load(kGlm);
  ASSERT_TRUE(whole.ok());
  EXPECT_EQ(first->ParameterCount() + last->ParameterCount(), whole->ParameterCount());
  EXPECT_FALSE(DsaModel::Load(kGlm, std::nullopt, "cpu", "--pattern", LayerRange{3, 5}).ok());
  EXPECT_FALSE(DsaModel::Load(kGlm, std::nullopt, "cpu", "--pattern", LayerRange{2, 2}).ok());
}

TEST(LayerRangeTest, ChainedStagesEqualTheWholeModelEvenWhenAStageBeginsWithASharedLayer) {
  auto whole = DsaModel::Load(kGlm);
  ASSERT_TRUE(whole.ok());
  auto tokens = ReadTokenArray(std::string(kGlm) + "/tokens.npy", whole->config().vocab_size);
  ASSERT_TRUE(tokens.ok());
  const std::vector<int32_t> seq = tokens->Row(0);
  ForwardOptions opts;
  opts.compute_logits = false;
  opts.compute_loss = true;
  auto reference = whole->Forward(seq, opts);
  ASSERT_TRUE(reference.ok());

  // [0, 1) [1, 3) [3, 4): the middle stage begins with Shared layer 1, which reuses layer 0's top-k.
  const std::vector<LayerRange> stages = {{0, 1}, {1, 3}, {3, 4}};
  Tensor hidden, topk;
  std::vector<double> nll;
  for (const LayerRange& r : stages) {
    auto stage = DsaModel::Load(kGlm, std::nullopt, "cpu", "--pattern", r);
    ASSERT_TRUE(stage.ok()) << stage.status().message();
    ForwardOptions o = opts;
    o.start_layer = r.begin;
    o.end_layer = r.end;
    o.hidden_in = hidden;
    o.initial_topk = topk;
    auto out = stage->Forward(seq, o);
    ASSERT_TRUE(out.ok()) << out.status().message();
    hidden = out->hidden_out;
    topk = out->topk;
    nll = out->token_nll;
    if (r.begin == 1) {  // without the indices buffer the Shared layer cannot run
      ForwardOptions dropped = o;
      dropped.initial_topk = Tensor();
      EXPECT_FALSE(stage->Forward(seq, dropped).ok());
    }
    if (r.begin > 0) EXPECT_FALSE(stage->Forward(seq, opts).ok());  // layers this stage does not hold
  }
  ASSERT_EQ(nll.size(), reference->token_nll.size());
  EXPECT_EQ(std::memcmp(nll.data(), reference->token_nll.data(), nll.size() * sizeof(double)), 0);
}

}  // namespace
}  // namespace indexcache
