// Parity with Hugging Face transformers: logits and per-layer top-k sets of tiny random models
// made by tools/make_hf_fixture.py (transformers 5.17, eager attention, fp32 forward).
#include <algorithm>
#include <cmath>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "core/npy.h"
#include "core/test_util.h"
#include "data/token_array.h"
#include "kernels/tolerances.h"
#include "model/dsa_model.h"

namespace indexcache {
namespace {

class ParityTest : public ::testing::TestWithParam<std::string> {};

TEST_P(ParityTest, LogitsAndTopkMatchTransformers) {
  const std::string dir = "tests/data/" + GetParam();
  auto model = DsaModel::Load(dir);
  ASSERT_TRUE(model.ok()) << model.status().ToString();
  auto tokens = ReadTokenArray(dir + "/tokens.npy", model->config().vocab_size);
  ASSERT_TRUE(tokens.ok()) << tokens.status().ToString();
  auto ref_logits = ReadNpy(dir + "/logits.npy");
  ASSERT_TRUE(ref_logits.ok()) << ref_logits.status().ToString();
  auto ref_topk = ReadNpy(dir + "/topk.npy");  // [full layers, B, T, k], sorted, -1 past causal end
  ASSERT_TRUE(ref_topk.ok()) << ref_topk.status().ToString();

  const IndexPattern& pattern = model->pattern();
  const int64_t B = tokens->rows(), T = tokens->cols(), V = model->config().vocab_size;
  ASSERT_EQ(ref_logits->numel(), B * T * V);
  ASSERT_EQ(ref_topk->size(0), pattern.num_full());
  const int64_t K = ref_topk->size(3);

  for (int64_t b = 0; b < B; ++b) {
    ForwardOptions opts;
    opts.trace.topk = true;
    auto r = model->Forward(tokens->Row(b), opts);
    ASSERT_TRUE(r.ok()) << r.status().ToString();
    const double err = RelL2(r->logits.data<float>(), ref_logits->data<float>() + b * T * V, T * V);
    EXPECT_LE(err, kParityRelL2F32) << dir << " row " << b;

    // Top-k as sets: HF's order among the selected keys is unspecified, ours is best-first.
    int call = 0;
    for (int l = 0; l < pattern.num_layers(); ++l) {
      const Tensor& ours = r->layers[l].topk;
      ASSERT_EQ(ours.size(1), model->config().index_topk);
      if (!pattern.is_full(l)) {
        // A Shared layer attends exactly the keys of its source Full layer.
        const Tensor& src = r->layers[pattern.source_of(l)].topk;
        EXPECT_TRUE(std::equal(ours.data<int32_t>(), ours.data<int32_t>() + ours.numel(), src.data<int32_t>()))
            << "layer " << l;
        continue;
      }
      for (int64_t t = 0; t < T; ++t) {
        std::vector<int32_t> mine(ours.data<int32_t>() + t * ours.size(1), ours.data<int32_t>() + (t + 1) * ours.size(1));
        mine.erase(std::remove(mine.begin(), mine.end(), -1), mine.end());
        std::sort(mine.begin(), mine.end());
        const int32_t* hf_row = ref_topk->data<int32_t>() + ((call * B + b) * T + t) * K;
        std::vector<int32_t> theirs(hf_row, hf_row + K);
        theirs.erase(std::remove(theirs.begin(), theirs.end(), -1), theirs.end());
        ASSERT_EQ(mine, theirs) << dir << " layer " << l << " row " << b << " query " << t;
      }
      ++call;
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Fixtures, ParityTest,
                         ::testing::Values("dsv32_moe_groups", "dsv32_yarn_fp8", "glm_shared_bf16",
                                           "dsv32_gentle_bf16"));

}  // namespace
}  // namespace indexcache
