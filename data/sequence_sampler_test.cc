// Tests for data/sequence_sampler: windows respect document boundaries (or pack across them),
// the per-epoch shuffle, data-parallel slicing, epoch wrap-around and exact resumption.
//
// Token values encode where they came from (document * 1000 + position), so every sequence says
// which window it is and whether it crossed a boundary.
#include "data/sequence_sampler.h"

#include <stdlib.h>

#include <algorithm>
#include <fstream>
#include <map>
#include <numeric>
#include <set>
#include <string>
#include <vector>

#include "core/file_util.h"
#include "data/token_shard.h"
#include "data/token_source.h"
#include "gtest/gtest.h"

namespace indexcache {
namespace {

using Batch = SequenceSampler::Batch;

// Document lengths chosen so some are shorter than seq_len 4, some empty, some with a tail.
const std::vector<int64_t> kLengths = {10, 3, 25, 0, 8, 17};  // 2 + 0 + 6 + 0 + 2 + 4 = 14 windows of 4

std::vector<std::vector<int32_t>> EncodedDocs(const std::vector<int64_t>& lengths) {
  std::vector<std::vector<int32_t>> docs;
  for (size_t d = 0; d < lengths.size(); ++d) {
    std::vector<int32_t> doc(lengths[d]);
    for (int64_t i = 0; i < lengths[d]; ++i) doc[i] = static_cast<int32_t>(d * 1000 + i);
    docs.push_back(doc);
  }
  return docs;
}

std::shared_ptr<TokenSource> Source(const std::vector<int64_t>& lengths = kLengths) {
  auto s = InMemoryTokenSource::Create(EncodedDocs(lengths), "test-docs");
  EXPECT_TRUE(s.ok());
  return *s;
}

std::unique_ptr<SequenceSampler> MakeSampler(SamplerOptions o, std::shared_ptr<TokenSource> src = Source()) {
  auto s = SequenceSampler::Create(std::move(src), o);
  EXPECT_TRUE(s.ok()) << s.status().ToString();
  return s.ok() ? std::move(s).value() : nullptr;
}

Batch Next(SequenceSampler& s, int rank = 0, int world = 1) {
  auto b = s.NextBatch(rank, world);
  EXPECT_TRUE(b.ok()) << b.status().ToString();
  return b.ok() ? *b : Batch{};
}

TEST(SequenceSampler, NoWindowCrossesADocumentBoundary) {
  auto s = MakeSampler({/*seq_len=*/4, /*global_batch=*/2, /*seed=*/7, /*cross_documents=*/false});
  ASSERT_EQ(s->windows(), 14);
  // The windows in document order: every full 4-token window of every document, tails dropped.
  std::set<int32_t> expected;
  for (size_t d = 0; d < kLengths.size(); ++d) {
    for (int64_t off = 0; off + 4 <= kLengths[d]; off += 4) expected.insert(static_cast<int32_t>(d * 1000 + off));
  }
  ASSERT_EQ(expected.size(), 14u);
  // One epoch is 7 steps of 2: every window exactly once, each inside one document.
  std::multiset<int32_t> seen;
  for (int step = 0; step < 7; ++step) {
    for (const auto& seq : Next(*s)) {
      ASSERT_EQ(seq.size(), 4u);
      for (size_t i = 1; i < seq.size(); ++i) {
        EXPECT_EQ(seq[i], seq[0] + static_cast<int32_t>(i)) << "window crosses a boundary at " << seq[0];
      }
      seen.insert(seq[0]);
    }
  }
  EXPECT_EQ(std::set<int32_t>(seen.begin(), seen.end()), expected);
  EXPECT_EQ(seen.size(), 14u);
  EXPECT_EQ(s->cursor().epoch, 1);
  EXPECT_EQ(s->cursor().position, 0);
  EXPECT_EQ(s->WindowStart(2), (std::pair<int64_t, int64_t>{2, 0}));  // document 1 (3 tokens) has none
  EXPECT_EQ(s->WindowStart(13), (std::pair<int64_t, int64_t>{5, 12}));
}

TEST(SequenceSampler, CrossDocumentsPacksTheConcatenatedStream) {
  auto s = MakeSampler({4, 3, 7, /*cross_documents=*/true});
  std::vector<int32_t> stream;
  for (const auto& doc : EncodedDocs(kLengths)) stream.insert(stream.end(), doc.begin(), doc.end());
  ASSERT_EQ(s->windows(), static_cast<int64_t>(stream.size()) / 4);  // 63 tokens: 15 windows
  bool crossed = false;
  for (int64_t w = 0; w < s->windows(); ++w) {
    auto seq = s->ReadWindow(w);
    ASSERT_TRUE(seq.ok()) << seq.status().ToString();
    EXPECT_EQ(*seq, std::vector<int32_t>(stream.begin() + 4 * w, stream.begin() + 4 * w + 4)) << "window " << w;
    crossed |= (*seq)[3] / 1000 != (*seq)[0] / 1000;
  }
  EXPECT_TRUE(crossed);
  // Window 3 is stream tokens [12, 16): document 1's last token, then document 2's first three.
  EXPECT_EQ(s->WindowStart(3), (std::pair<int64_t, int64_t>{1, 2}));
  EXPECT_EQ(*s->ReadWindow(3), (std::vector<int32_t>{1002, 2000, 2001, 2002}));
}

TEST(SequenceSampler, ShuffleIsADeterministicPermutationPerSeedAndEpoch) {
  const int64_t n = 1000;
  const auto a = SequenceSampler::EpochOrder(n, 42, 0);
  std::vector<int64_t> sorted = a;
  std::sort(sorted.begin(), sorted.end());
  std::vector<int64_t> iota(n);
  std::iota(iota.begin(), iota.end(), 0);
  EXPECT_EQ(sorted, iota);
  EXPECT_NE(a, iota);
  EXPECT_EQ(a, SequenceSampler::EpochOrder(n, 42, 0));
  EXPECT_NE(a, SequenceSampler::EpochOrder(n, 43, 0));
  EXPECT_NE(a, SequenceSampler::EpochOrder(n, 42, 1));
  // Neighbouring seeds do not replay each other's epochs.
  EXPECT_NE(SequenceSampler::EpochOrder(n, 42, 1), SequenceSampler::EpochOrder(n, 43, 0));
  EXPECT_TRUE(SequenceSampler::EpochOrder(0, 1, 0).empty());
  EXPECT_EQ(SequenceSampler::EpochOrder(1, 1, 0), std::vector<int64_t>{0});

  // Whole samplers: the same seed gives the same batches, another seed other batches.
  auto s1 = MakeSampler({4, 2, 5, false}), s2 = MakeSampler({4, 2, 5, false}), s3 = MakeSampler({4, 2, 6, false});
  std::vector<Batch> b1, b2, b3;
  for (int i = 0; i < 14; ++i) {
    b1.push_back(Next(*s1));
    b2.push_back(Next(*s2));
    b3.push_back(Next(*s3));
  }
  EXPECT_EQ(b1, b2);
  EXPECT_NE(b1, b3);
  // Epoch 1 (steps 7..13) is a different order of the same windows.
  EXPECT_NE(std::vector<Batch>(b1.begin(), b1.begin() + 7), std::vector<Batch>(b1.begin() + 7, b1.end()));
}

TEST(SequenceSampler, RankSlicesAreDisjointAndTogetherEqualTheOneRankBatch) {
  const SamplerOptions o{4, /*global_batch=*/4, 11, false};
  auto single = MakeSampler(o);
  std::vector<std::unique_ptr<SequenceSampler>> two, four;
  for (int r = 0; r < 2; ++r) two.push_back(MakeSampler(o));
  for (int r = 0; r < 4; ++r) four.push_back(MakeSampler(o));
  for (int step = 0; step < 20; ++step) {  // 80 sequences: across several epochs of 14
    const Batch whole = Next(*single);
    ASSERT_EQ(whole.size(), 4u);
    Batch joined2, joined4;
    std::set<int32_t> firsts;
    for (int r = 0; r < 2; ++r) {
      const Batch part = Next(*two[r], r, 2);
      ASSERT_EQ(part.size(), 2u);
      joined2.insert(joined2.end(), part.begin(), part.end());
    }
    for (int r = 0; r < 4; ++r) {
      const Batch part = Next(*four[r], r, 4);
      ASSERT_EQ(part.size(), 1u);
      joined4.insert(joined4.end(), part.begin(), part.end());
    }
    EXPECT_EQ(joined2, whole) << "step " << step;
    EXPECT_EQ(joined4, whole) << "step " << step;
    // Within an epoch the ranks' sequences are distinct windows (steps 0-2 lie inside epoch 0).
    if (step < 3) {
      for (const auto& seq : joined2) firsts.insert(seq[0]);
      EXPECT_EQ(firsts.size(), 4u);
    }
    EXPECT_EQ(two[0]->cursor(), single->cursor());
    EXPECT_EQ(four[3]->cursor(), single->cursor());
  }
}

TEST(SequenceSampler, BadRankOrWorldIsAnErrorAndLeavesTheCursor) {
  auto s = MakeSampler({4, 6, 1, false});
  Next(*s);
  const auto before = s->cursor();
  EXPECT_NE(s->NextBatch(0, 4).status().message().find("does not divide"), std::string::npos);
  EXPECT_FALSE(s->NextBatch(2, 2).ok());
  EXPECT_FALSE(s->NextBatch(-1, 2).ok());
  EXPECT_FALSE(s->NextBatch(0, 0).ok());
  EXPECT_EQ(s->cursor(), before);
  EXPECT_EQ(Next(*s, 1, 3).size(), 2u);
}

TEST(SequenceSampler, CursorSaveAndRestoreReproducesTheFollowingBatches) {
  const SamplerOptions o{4, 4, ~uint64_t{0} - 3, false};  // a seed above INT64_MAX survives JSON
  auto a = MakeSampler(o);
  for (int i = 0; i < 5; ++i) Next(*a);
  const std::string saved = CursorToJson(a->cursor()).dump();
  std::vector<Batch> expected;
  for (int i = 0; i < 10; ++i) expected.push_back(Next(*a));

  auto cursor = CursorFromJson(nlohmann::json::parse(saved));
  ASSERT_TRUE(cursor.ok()) << cursor.status().ToString();
  EXPECT_EQ(cursor->seed, o.seed);
  auto b = MakeSampler(o);
  ASSERT_TRUE(b->Restore(*cursor).ok());
  for (int i = 0; i < 10; ++i) EXPECT_EQ(Next(*b), expected[i]) << "batch " << i << " after restore";
  EXPECT_EQ(b->cursor(), a->cursor());

  // Resuming on two ranks continues the same stream.
  std::vector<std::unique_ptr<SequenceSampler>> ranks;
  for (int r = 0; r < 2; ++r) {
    ranks.push_back(MakeSampler(o));
    ASSERT_TRUE(ranks[r]->Restore(*cursor).ok());
  }
  for (int i = 0; i < 10; ++i) {
    Batch joined = Next(*ranks[0], 0, 2);
    const Batch second = Next(*ranks[1], 1, 2);
    joined.insert(joined.end(), second.begin(), second.end());
    EXPECT_EQ(joined, expected[i]) << "batch " << i << " after restore on 2 ranks";
  }
}

TEST(SequenceSampler, RestoreRefusesACursorOfAnotherStream) {
  auto s = MakeSampler({4, 4, 1, false});
  SamplerCursor c = s->cursor();
  c.seed = 2;
  EXPECT_NE(s->Restore(c).message().find("seed 2"), std::string::npos);
  c = s->cursor();
  c.windows = 99;
  EXPECT_NE(s->Restore(c).message().find("the data changed"), std::string::npos);
  c = s->cursor();
  c.position = 14;
  EXPECT_FALSE(s->Restore(c).ok());
  c = s->cursor();
  c.cross_documents = true;
  EXPECT_FALSE(s->Restore(c).ok());

  nlohmann::json j = CursorToJson(s->cursor());
  EXPECT_TRUE(CursorFromJson(j).ok());
  for (const char* field : {"epoch", "position", "seq_len", "windows", "seed", "cross_documents"}) {
    nlohmann::json broken = j;
    broken.erase(field);
    const Status missing = CursorFromJson(broken).status();
    EXPECT_NE(missing.message().find(std::string("'") + field + "'"), std::string::npos) << missing.ToString();
    broken[field] = "seven";
    EXPECT_FALSE(CursorFromJson(broken).ok()) << field;
  }
  j["epoch"] = -1;
  EXPECT_FALSE(CursorFromJson(j).ok());
  EXPECT_FALSE(CursorFromJson(nlohmann::json::array()).ok());
}

TEST(SequenceSampler, EpochWrapsInsideABatch) {
  auto s = MakeSampler({4, 4, 3, false});  // 14 windows, batches of 4
  std::vector<int64_t> stream;  // window indices in the order served
  const auto e0 = SequenceSampler::EpochOrder(14, 3, 0), e1 = SequenceSampler::EpochOrder(14, 3, 1);
  for (int step = 0; step < 7; ++step) {  // 28 sequences = exactly 2 epochs
    for (const auto& seq : Next(*s)) {
      // Map the sequence back to its window in document order.
      int64_t w = -1;
      for (int64_t k = 0; k < s->windows(); ++k) {
        if ((*s->ReadWindow(k))[0] == seq[0]) w = k;
      }
      ASSERT_GE(w, 0);
      stream.push_back(w);
    }
    if (step == 3) {  // positions 12..15: the last two of epoch 0, the first two of epoch 1
      EXPECT_EQ(s->cursor().epoch, 1);
      EXPECT_EQ(s->cursor().position, 2);
    }
  }
  std::vector<int64_t> want = e0;
  want.insert(want.end(), e1.begin(), e1.end());
  EXPECT_EQ(stream, want);
  EXPECT_EQ(s->cursor().epoch, 2);
  EXPECT_EQ(s->cursor().position, 0);

  // A global batch larger than an epoch spans several epochs.
  auto big = MakeSampler({4, 32, 3, false});
  const Batch b = Next(*big);
  ASSERT_EQ(b.size(), 32u);
  EXPECT_EQ(big->cursor().epoch, 2);
  EXPECT_EQ(big->cursor().position, 4);
  EXPECT_EQ(b[14][0], (*big->ReadWindow(e1[0]))[0]);
  EXPECT_EQ(big->WindowAt(2, 3), SequenceSampler::EpochOrder(14, 3, 2)[3]);
}

TEST(SequenceSampler, NoWindowIsAnError) {
  const Status none = SequenceSampler::Create(Source({3, 2, 0}), {4, 1, 0, false}).status();
  EXPECT_NE(none.message().find("test-docs: no sequence of 4 tokens"), std::string::npos) << none.ToString();
  EXPECT_FALSE(SequenceSampler::Create(Source({}), {4, 1, 0, false}).ok());
  EXPECT_FALSE(SequenceSampler::Create(Source({1, 2}), {4, 1, 0, true}).ok());
  EXPECT_TRUE(SequenceSampler::Create(Source({3, 2}), {4, 1, 0, true}).ok());  // packing finds one
  EXPECT_FALSE(SequenceSampler::Create(Source(), {0, 1, 0, false}).ok());
  EXPECT_FALSE(SequenceSampler::Create(Source(), {4, 0, 0, false}).ok());
  EXPECT_FALSE(SequenceSampler::Create(nullptr, {4, 1, 0, false}).ok());
}

// Issue 12: "token id 300 at position 5 is outside the vocabulary" named neither the data file
// nor the document. With vocab_size set, the sampler names both (doc d holds ids d*1000 + i).
TEST(SequenceSampler, TokenOutsideTheVocabularyNamesFileDocumentAndOffset) {
  SamplerOptions o{4, 14, 0, false};
  o.vocab_size = 2005;  // documents 0..2 fit (ids < 2025 only up to 2004); document 2 token 5 is 2005
  auto s = MakeSampler(o);
  ASSERT_NE(s, nullptr);
  const auto b = s->NextBatch(0, 1);
  ASSERT_FALSE(b.ok());
  const std::string& m = b.status().message();
  EXPECT_EQ(m.rfind("test-docs: document ", 0), 0u) << m;
  EXPECT_NE(m.find("is outside the model's vocabulary [0, 2005)"), std::string::npos) << m;
  o.vocab_size = 6000;
  auto ok = MakeSampler(o);
  EXPECT_TRUE(ok->NextBatch(0, 1).ok());
}

TEST(SequenceSampler, ReadsFromATokenShardAndReportsDamagedTokens) {
  std::string tmpl = JoinPath(::testing::TempDir(), "sampler_test_XXXXXX");
  std::vector<char> buf(tmpl.begin(), tmpl.end());
  buf.push_back('\0');
  ASSERT_NE(::mkdtemp(buf.data()), nullptr);
  const std::string path = JoinPath(buf.data(), "s.ictok");
  ASSERT_TRUE(WriteTokenShard(path, EncodedDocs(kLengths), 4).ok());
  auto shard = TokenShard::Open(path);
  ASSERT_TRUE(shard.ok()) << shard.status().ToString();
  auto from_file = MakeSampler({4, 7, 9, false}, *shard);
  auto from_memory = MakeSampler({4, 7, 9, false});
  for (int i = 0; i < 6; ++i) EXPECT_EQ(Next(*from_file), Next(*from_memory));

  // A token above INT32_MAX in the file: NextBatch names the file and the cursor stays put.
  const std::string bad = JoinPath(buf.data(), "bad.ictok");
  ASSERT_TRUE(WriteTokenShard(bad, {{1, 2, 3, 4}}, 4).ok());
  {
    std::fstream f(bad, std::ios::in | std::ios::out | std::ios::binary);
    f.seekp(32 + 2 * 8 + 4);  // header, two offsets, then token 1
    const uint32_t huge = 0xFFFFFFFFu;
    f.write(reinterpret_cast<const char*>(&huge), 4);
    ASSERT_TRUE(f.good());
  }
  auto bad_shard = TokenShard::Open(bad);
  ASSERT_TRUE(bad_shard.ok()) << bad_shard.status().ToString();
  auto s = MakeSampler({4, 1, 0, false}, *bad_shard);
  const Status err = s->NextBatch(0, 1).status();
  EXPECT_NE(err.message().find(bad + ": token 4294967295"), std::string::npos) << err.ToString();
  EXPECT_EQ(s->cursor().position, 0);
}

}  // namespace
}  // namespace indexcache
