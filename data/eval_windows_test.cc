// Evaluation windows: the same tokens give the same windows through every reader (.npy rows,
// Megatron documents); tails are dropped, windows never cross documents, max_seqs keeps the first
// ones, and bad input is one error naming the source (and, for a bad id, document and position).
#include "data/eval_windows.h"

#include <string>
#include <vector>

#include "core/npy.h"
#include "core/test_util.h"
#include "data/megatron_dataset.h"
#include "gtest/gtest.h"

namespace indexcache {
namespace {

std::vector<std::vector<int32_t>> Docs() {
  std::vector<std::vector<int32_t>> docs(3);
  for (int d = 0; d < 3; ++d) {
    for (int i = 0; i < 23; ++i) docs[d].push_back((d * 31 + i * 7) % 50);
  }
  return docs;
}

TEST(EvalWindows, NpyRowsAndMegatronDocumentsGiveTheSameWindows) {
  const std::string dir = MakeTempDir();
  const auto docs = Docs();
  Tensor arr = Tensor::Zeros(DType::kI32, {3, 23});
  for (int d = 0; d < 3; ++d) std::copy(docs[d].begin(), docs[d].end(), arr.data<int32_t>() + d * 23);
  ASSERT_TRUE(WriteNpy(dir + "/t.npy", arr).ok());
  ASSERT_TRUE(WriteMegatronDataset(dir + "/m", MegatronDType::kUInt16, docs).ok());

  auto a = ReadEvalWindows(dir + "/t.npy", 10, 0, 50);
  auto b = ReadEvalWindows(dir + "/m", 10, 0, 50);
  ASSERT_TRUE(a.ok()) << a.status().message();
  ASSERT_TRUE(b.ok()) << b.status().message();
  ASSERT_EQ(a->size(), 6u);  // two whole windows of 10 per 23-token document; the 3-token tails dropped
  ASSERT_EQ(b->size(), 6u);
  for (size_t i = 0; i < 6; ++i) {
    EXPECT_EQ((*a)[i].tokens, (*b)[i].tokens);
    EXPECT_EQ((*a)[i].document, static_cast<int64_t>(i / 2));
    EXPECT_EQ((*a)[i].offset, static_cast<int64_t>(10 * (i % 2)));
    const auto& doc = docs[i / 2];
    EXPECT_EQ((*a)[i].tokens, std::vector<int32_t>(doc.begin() + 10 * (i % 2), doc.begin() + 10 * (i % 2) + 10));
  }
  auto first = ReadEvalWindows(dir + "/m", 10, 3, 50);
  ASSERT_TRUE(first.ok());
  ASSERT_EQ(first->size(), 3u);
  EXPECT_EQ((*first)[2].tokens, (*b)[2].tokens);
}

TEST(EvalWindows, ErrorsNameTheSource) {
  const std::string dir = MakeTempDir();
  ASSERT_TRUE(WriteMegatronDataset(dir + "/m", MegatronDType::kUInt16, Docs()).ok());
  auto too_long = ReadEvalWindows(dir + "/m", 24, 0, 50);
  ASSERT_FALSE(too_long.ok());
  EXPECT_NE(too_long.status().message().find(dir + "/m: no complete sequence"), std::string::npos)
      << too_long.status().message();
  EXPECT_NE(too_long.status().message().find("longest document has 23"), std::string::npos);

  auto vocab = ReadEvalWindows(dir + "/m", 10, 0, 40);  // ids reach 49
  ASSERT_FALSE(vocab.ok());
  EXPECT_NE(vocab.status().message().find(dir + "/m: document 0, position"), std::string::npos)
      << vocab.status().message();
  EXPECT_NE(vocab.status().message().find("outside the model's vocabulary [0, 40)"), std::string::npos);

  EXPECT_FALSE(ReadEvalWindows(dir + "/m", 1, 0, 50).ok());
  EXPECT_FALSE(ReadEvalWindows(dir + "/m", kMaxEvalSeqLen + 1, 0, 50).ok());
  EXPECT_FALSE(ReadEvalWindows(dir + "/m", 10, -1, 50).ok());
  auto missing = ReadEvalWindows(dir + "/nothing", 10, 0, 50);
  ASSERT_FALSE(missing.ok());
  EXPECT_NE(missing.status().message().find(dir + "/nothing"), std::string::npos);
}

}  // namespace
}  // namespace indexcache
