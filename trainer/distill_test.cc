// DistillSequence rebuilds the teachers' queries in chunks: the loss and every gradient equal one
// whole-sequence chunk's, whatever the chunk size (and chunks that do not divide T).
#include "trainer/distill.h"

#include <cmath>

#include <gtest/gtest.h>

#include "core/test_util.h"

#include "data/token_array.h"

namespace indexcache {
namespace {


struct Pass {
  DistillStats stats;
  std::vector<Tensor> grads;  // host f32, every Full layer's five tensors
};

Pass RunDistill(const DsaModel& m, DistillMode mode, DistillTargets targets, const std::vector<int32_t>& tokens,
         int64_t chunk) {
  Backend& be = m.backend();
  StudentSet students, g;
  for (int l = 0; l < m.config().num_layers; ++l) {
    if (!m.pattern().is_full(l)) continue;
    const IndexerWeights& w = m.weights().layers[l].indexer;
    students[l] = {be.WeightF32(w.wq_b.data(), {w.wq_b.rows(), w.wq_b.cols()}),
                   be.WeightF32(w.wk.data(), {w.wk.rows(), w.wk.cols()}),
                   be.WeightF32(w.k_norm_weight.data(), {w.k_norm_weight.size()}),
                   be.WeightF32(w.k_norm_bias.data(), {w.k_norm_bias.size()}),
                   be.WeightF32(w.weights_proj.data(), {w.weights_proj.rows(), w.weights_proj.cols()})};
    g[l] = {be.Alloc(DType::kF32, students[l].wq_b.shape()), be.Alloc(DType::kF32, students[l].wk.shape()),
            be.Alloc(DType::kF32, students[l].k_norm_weight.shape()),
            be.Alloc(DType::kF32, students[l].k_norm_bias.shape()),
            be.Alloc(DType::kF32, students[l].weights_proj.shape())};
  }
  Pass p;
  const Status s = DistillSequence(m, m.pattern(), mode, students, tokens, 1.0 / 64, &g, &p.stats, targets,
                                   /*stage=*/nullptr, chunk);
  EXPECT_TRUE(s.ok()) << s.ToString();
  for (auto& [l, t] : g) {
    for (const Tensor* x : {&t.wq_b, &t.wk, &t.k_norm_weight, &t.k_norm_bias, &t.weights_proj}) {
      p.grads.push_back(be.ToHost(*x));
    }
  }
  return p;
}

TEST(DistillChunkTest, ChunkedTeachersGiveTheSameLossAndGradients) {
  const std::string dir = "tests/data/dsv32_gentle_bf16";
  auto m = DsaModel::Load(dir, std::string("FSFS"), "cpu");
  ASSERT_TRUE(m.ok()) << m.status().ToString();
  auto tokens = ReadTokenArray(dir + "/tokens.npy", m->config().vocab_size);
  ASSERT_TRUE(tokens.ok());
  const std::vector<int32_t> seq = tokens->Row(0);
  const int64_t T = static_cast<int64_t>(seq.size());
  for (DistillMode mode : {DistillMode::kDense, DistillMode::kSparse}) {
    for (DistillTargets targets : {DistillTargets::kServed, DistillTargets::kOwn}) {
      const Pass whole = RunDistill(*m, mode, targets, seq, T);
      ASSERT_GT(whole.stats.loss_sum, 0.0);
      for (int64_t chunk : {int64_t{1}, int64_t{7}, T - 3}) {
        const Pass part = RunDistill(*m, mode, targets, seq, chunk);
        EXPECT_EQ(part.stats.queries, whole.stats.queries);
        EXPECT_NEAR(part.stats.loss_sum, whole.stats.loss_sum, 1e-5 * whole.stats.loss_sum) << "chunk " << chunk;
        ASSERT_EQ(part.grads.size(), whole.grads.size());
        for (size_t k = 0; k < whole.grads.size(); ++k) {
          EXPECT_LE(RelL2(part.grads[k], whole.grads[k]), 1e-4) << "chunk " << chunk << " gradient " << k;
        }
      }
    }
  }
}

}  // namespace
}  // namespace indexcache
