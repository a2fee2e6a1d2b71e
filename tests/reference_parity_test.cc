// The shipped reference model (models/reference) against transformers 5.17: `indexcache`'s fp32
// CPU forward on one held-out window of 384 tokens (top-k 256, so positions past 256 are sparse)
// reproduces transformers' next-token loss at every position and its full logits at 8 positions
// (tools/reference_model/make_parity_fixture.py wrote them from DeepseekV32ForCausalLM, eager,
// fp32). Also checks the shipped held-out sample reads the same through .npy and Megatron.
#include <cmath>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "core/npy.h"
#include "data/eval_windows.h"
#include "data/token_array.h"
#include "kernels/tolerances.h"
#include "model/dsa_model.h"

namespace indexcache {
namespace {

const char kModel[] = "models/reference";

TEST(ReferenceParityTest, CpuForwardMatchesTransformers) {
  auto model = DsaModel::Load(kModel);
  ASSERT_TRUE(model.ok()) << model.status().message();
  auto tokens = ReadTokenArray(std::string(kModel) + "/parity/tokens.npy", model->config().vocab_size);
  auto nll = ReadNpy(std::string(kModel) + "/parity/nll.npy");
  auto rows = ReadNpy(std::string(kModel) + "/parity/logits_rows.npy");
  auto positions = ReadNpy(std::string(kModel) + "/parity/positions.npy");
  ASSERT_TRUE(tokens.ok() && nll.ok() && rows.ok() && positions.ok());
  const std::vector<int32_t> ids = tokens->Row(0);
  ForwardOptions opt;
  opt.compute_loss = true;
  auto r = model->Forward(ids, opt);
  ASSERT_TRUE(r.ok()) << r.status().message();

  const int64_t T = static_cast<int64_t>(ids.size()), V = model->config().vocab_size;
  ASSERT_EQ(nll->numel(), T - 1);
  ASSERT_EQ(static_cast<int64_t>(r->token_nll.size()), T - 1);
  // fp32 indexer scores summed in another order can swap two nearly tied keys at the top-256
  // cut. On this window every position up to 293 agrees to fp32 rounding (the first 256 are dense,
  // the next 37 sparse); from 294 on about one position in ten differs by 1e-4 to 6e-3 nats, the
  // pattern of one swapped key whose changed attention output reaches later queries through the
  // next layers' keys. Such positions must stay a minority and small.
  double worst = 0, sum_ours = 0, sum_theirs = 0;
  int64_t off = 0;
  for (int64_t t = 0; t + 1 < T; ++t) {
    const double theirs = nll->data<double>()[t], diff = std::fabs(r->token_nll[t] - theirs);
    worst = std::max(worst, diff);
    off += diff > 1e-4 ? 1 : 0;
    sum_ours += r->token_nll[t];
    sum_theirs += theirs;
  }
  EXPECT_LE(off, (T - 1) / 8) << "positions whose loss differs by more than 1e-4";
  EXPECT_LE(worst, 2e-2) << "largest per-position loss difference";
  EXPECT_NEAR(sum_ours / (T - 1), sum_theirs / (T - 1), 1e-4);

  const Tensor want = rows->ToFloat32();
  for (int64_t i = 0; i < positions->numel(); ++i) {
    const int64_t t = positions->data<int32_t>()[i];
    double num = 0, den = 0;
    for (int64_t v = 0; v < V; ++v) {
      const double d = double(r->logits.data<float>()[t * V + v]) - want.data<float>()[i * V + v];
      num += d * d;
      den += double(want.data<float>()[i * V + v]) * want.data<float>()[i * V + v];
    }
    EXPECT_LE(std::sqrt(num / den), kParityRelL2F32) << "position " << t;
  }
  std::printf("reference model vs transformers: mean loss %.6f vs %.6f, worst position %.2e, %lld of %lld positions "
              "off by more than 1e-4\n", sum_ours / (T - 1), sum_theirs / (T - 1), worst, static_cast<long long>(off),
              static_cast<long long>(T - 1));
}

TEST(ReferenceParityTest, HeldOutSampleReadsTheSameFromNpyAndMegatron) {
  auto a = ReadEvalWindows(std::string(kModel) + "/heldout/heldout_sample.npy", 4096, 0, 8192);
  auto b = ReadEvalWindows(std::string(kModel) + "/heldout/heldout_sample_text_document", 4096, 0, 8192);
  ASSERT_TRUE(a.ok()) << a.status().message();
  ASSERT_TRUE(b.ok()) << b.status().message();
  ASSERT_EQ(a->size(), 16u);
  ASSERT_EQ(a->size(), b->size());
  for (size_t i = 0; i < a->size(); ++i) EXPECT_EQ((*a)[i].tokens, (*b)[i].tokens) << i;
}

}  // namespace
}  // namespace indexcache
