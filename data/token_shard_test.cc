// Tests for data/token_shard (round trips, the byte layout, validation) and for OpenTokenSource,
// which picks a reader by path and concatenates comma-separated lists.
#include "data/token_shard.h"

#include <stdlib.h>
#include <unistd.h>

#include <cstring>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "core/file_util.h"
#include "core/npy.h"
#include "core/tensor.h"
#include "data/megatron_dataset.h"
#include "data/open_token_source.h"
#include "gtest/gtest.h"
#include "core/test_util.h"

namespace indexcache {
namespace {

template <typename T>
std::string Raw(const std::vector<T>& v) {
  return std::string(reinterpret_cast<const char*>(v.data()), v.size() * sizeof(T));
}

template <typename T>
std::string Raw1(T v) {
  return std::string(reinterpret_cast<const char*>(&v), sizeof(T));
}

// A shard laid out by hand from the format description in token_shard.h.
template <typename Tok>
std::string ShardBytes(const std::vector<uint64_t>& offsets, const std::vector<Tok>& tokens, uint32_t version = 1) {
  return std::string("ICTOKSH1") + Raw1<uint32_t>(version) + Raw1<uint32_t>(sizeof(Tok)) +
         Raw1<uint64_t>(offsets.size() - 1) + Raw1<uint64_t>(tokens.size()) + Raw(offsets) + Raw(tokens);
}

void ExpectErrorNaming(const Status& s, const std::string& file, const std::string& fragment = "") {
  ASSERT_FALSE(s.ok());
  EXPECT_NE(s.message().find(file), std::string::npos) << s.ToString();
  EXPECT_EQ(s.message().find('\n'), std::string::npos) << s.ToString();
  if (!fragment.empty()) {
    EXPECT_NE(s.message().find(fragment), std::string::npos) << s.ToString();
  }
}

const std::vector<std::vector<int32_t>> kDocs = {{5, 6, 7}, {}, {65535, 0}, {42}};

TEST(TokenShard, RoundTripTwoBytes) {
  const std::string path = JoinPath(MakeTempDir(), "a.ictok");
  ASSERT_TRUE(WriteTokenShard(path, kDocs, 2).ok());
  EXPECT_EQ(ReadBytes(path), ShardBytes<uint16_t>({0, 3, 3, 5, 6}, {5, 6, 7, 65535, 0, 42}));
  auto shard = TokenShard::Open(path);
  ASSERT_TRUE(shard.ok()) << shard.status().ToString();
  EXPECT_EQ((*shard)->bytes_per_token(), 2);
  ASSERT_EQ((*shard)->documents(), 4);
  EXPECT_EQ((*shard)->total_tokens(), 6);
  for (int64_t d = 0; d < 4; ++d) EXPECT_EQ(*(*shard)->ReadDocument(d), kDocs[d]);
  EXPECT_EQ((*shard)->document_offset(4), 6);
  EXPECT_EQ(*(*shard)->ReadTokens(0, 1, 3), (std::vector<int32_t>{6, 7}));
  EXPECT_EQ(*(*shard)->Token(2, 0), 65535);
  EXPECT_FALSE((*shard)->ReadTokens(0, 2, 4).ok());
  EXPECT_FALSE((*shard)->ReadTokens(4, 0, 0).ok());
}

TEST(TokenShard, RoundTripFourBytes) {
  const std::string path = JoinPath(MakeTempDir(), "b.ictok");
  std::vector<std::vector<int32_t>> docs = kDocs;
  docs.push_back({151935, 2147483647});
  ASSERT_TRUE(WriteTokenShard(path, docs, 4).ok());
  EXPECT_EQ(ReadBytes(path),
            ShardBytes<uint32_t>({0, 3, 3, 5, 6, 8}, {5, 6, 7, 65535, 0, 42, 151935, 2147483647}));
  auto shard = TokenShard::Open(path);
  ASSERT_TRUE(shard.ok()) << shard.status().ToString();
  EXPECT_EQ((*shard)->bytes_per_token(), 4);
  ASSERT_EQ((*shard)->documents(), 5);
  for (int64_t d = 0; d < 5; ++d) EXPECT_EQ(*(*shard)->ReadDocument(d), docs[d]);
}

TEST(TokenShard, EmptyShardAndStreamingWriter) {
  const std::string dir = MakeTempDir();
  ASSERT_TRUE(WriteTokenShard(JoinPath(dir, "empty.ictok"), {}, 2).ok());
  auto empty = TokenShard::Open(JoinPath(dir, "empty.ictok"));
  ASSERT_TRUE(empty.ok()) << empty.status().ToString();
  EXPECT_EQ((*empty)->documents(), 0);

  // More tokens than the writer's 4 MiB copy buffer, so the spool is copied in several pieces.
  auto writer = TokenShardWriter::Create(JoinPath(dir, "big.ictok"), 4);
  ASSERT_TRUE(writer.ok());
  std::vector<int32_t> doc(1 << 20);
  for (int k = 0; k < 3; ++k) {
    for (size_t i = 0; i < doc.size(); ++i) doc[i] = static_cast<int32_t>(i * 3 + k);
    ASSERT_TRUE((*writer)->AddDocument(doc).ok());
  }
  ASSERT_TRUE((*writer)->Finish().ok());
  auto big = TokenShard::Open(JoinPath(dir, "big.ictok"));
  ASSERT_TRUE(big.ok()) << big.status().ToString();
  EXPECT_EQ((*big)->total_tokens(), 3 << 20);
  EXPECT_EQ(*(*big)->ReadDocument(2), doc);
  EXPECT_EQ(*(*big)->Token(1, 1000), 3001);
  // Nothing but the two shards is left in the directory (the spool was anonymous).
  EXPECT_FALSE(FileExists(JoinPath(dir, "big.ictok.tmp." + std::to_string(::getpid()))));
}

TEST(TokenShard, WriterRefusesTokensThatDoNotFit) {
  const std::string path = JoinPath(MakeTempDir(), "w.ictok");
  ExpectErrorNaming(WriteTokenShard(path, {{1}, {2, 65536}}, 2), path, "position 1 of document 1");
  ExpectErrorNaming(WriteTokenShard(path, {{-3}}, 4), path, "-3");
  ExpectErrorNaming(WriteTokenShard(path, {{1}}, 3), path, "2 or 4");
  EXPECT_FALSE(FileExists(path));
}

// Damaged shards: each a one-line Status naming the file.
class ShardDamage : public ::testing::Test {
 protected:
  void SetUp() override { path_ = JoinPath(MakeTempDir(), "d.ictok"); }
  Status OpenBytes(const std::string& bytes) {
    WriteBytes(path_, bytes);
    return TokenShard::Open(path_).status();
  }
  std::string Good() const { return ShardBytes<uint16_t>({0, 2, 3}, {1, 2, 3}); }
  std::string path_;
};

TEST_F(ShardDamage, GoodOpens) { EXPECT_TRUE(OpenBytes(Good()).ok()); }

TEST_F(ShardDamage, Header) {
  std::string s = Good();
  s[0] = 'X';
  ExpectErrorNaming(OpenBytes(s), path_, "magic");
  ExpectErrorNaming(OpenBytes(ShardBytes<uint16_t>({0, 2, 3}, {1, 2, 3}, 2)), path_, "version 2");
  s = Good();
  s[12] = 3;
  ExpectErrorNaming(OpenBytes(s), path_, "bytes per token is 3");
  ExpectErrorNaming(OpenBytes(Good().substr(0, 31)), path_, "truncated header");
  ExpectErrorNaming(OpenBytes(""), path_, "truncated header");
}

TEST_F(ShardDamage, SizeMismatch) {
  ExpectErrorNaming(OpenBytes(Good().substr(0, Good().size() - 1)), path_, "truncated");
  ExpectErrorNaming(OpenBytes(Good() + "zz"), path_, "trailing");
  // Counts large enough to overflow a naive size computation.
  std::string s = Good();
  const uint64_t huge = ~uint64_t{0} / 2;
  std::memcpy(&s[16], &huge, 8);
  ExpectErrorNaming(OpenBytes(s), path_, "truncated");
  s = Good();
  std::memcpy(&s[24], &huge, 8);
  ExpectErrorNaming(OpenBytes(s), path_, "truncated");
}

TEST_F(ShardDamage, Offsets) {
  ExpectErrorNaming(OpenBytes(ShardBytes<uint16_t>({1, 2, 3}, {1, 2, 3})), path_, "offsets[0] = 1");
  ExpectErrorNaming(OpenBytes(ShardBytes<uint16_t>({0, 2, 1, 3}, {1, 2, 3})), path_, "offsets[2] = 1");
  ExpectErrorNaming(OpenBytes(ShardBytes<uint16_t>({0, 4, 3}, {1, 2, 3})), path_, "offsets[1] = 4");
  ExpectErrorNaming(OpenBytes(ShardBytes<uint16_t>({0, 2, 2}, {1, 2, 3})), path_, "expected the token count 3");
}

TEST_F(ShardDamage, TokenAboveInt32MaxIsAnErrorOnRead) {
  ASSERT_TRUE(OpenBytes(ShardBytes<uint32_t>({0, 2}, {7, 0x80000000u})).ok());
  auto shard = TokenShard::Open(path_);
  ASSERT_TRUE(shard.ok());
  EXPECT_EQ(*(*shard)->Token(0, 0), 7);
  const Status s = (*shard)->ReadDocument(0).status();
  ExpectErrorNaming(s, path_, "2147483648 at byte offset 52");
  EXPECT_EQ(s.code(), StatusCode::kDataLoss);
}

TEST(OpenTokenSource, PicksTheReaderByPathAndConcatenatesLists) {
  const std::string dir = MakeTempDir();
  const std::string shard = JoinPath(dir, "a.ictok"), noext = JoinPath(dir, "shard_without_extension");
  const std::string megatron = JoinPath(dir, "corpus"), npy = JoinPath(dir, "rows.npy");
  ASSERT_TRUE(WriteTokenShard(shard, {{1, 2}, {3}}, 2).ok());
  ASSERT_TRUE(WriteTokenShard(noext, {{9}}, 4).ok());
  ASSERT_TRUE(WriteMegatronDataset(megatron, MegatronDType::kInt32, {{4, 5, 6}}).ok());
  Tensor rows = Tensor::Zeros(DType::kI64, {2, 2});
  for (int i = 0; i < 4; ++i) rows.data<int64_t>()[i] = 10 + i;
  ASSERT_TRUE(WriteNpy(npy, rows).ok());

  auto one = OpenTokenSource(shard);
  ASSERT_TRUE(one.ok()) << one.status().ToString();
  EXPECT_EQ((*one)->documents(), 2);
  auto sniffed = OpenTokenSource(noext);
  ASSERT_TRUE(sniffed.ok()) << sniffed.status().ToString();
  EXPECT_EQ(*(*sniffed)->ReadDocument(0), std::vector<int32_t>{9});

  auto all = OpenTokenSource(shard + "," + megatron + "," + npy + "," + noext);
  ASSERT_TRUE(all.ok()) << all.status().ToString();
  EXPECT_EQ((*all)->name(), shard + "," + megatron + "," + npy + "," + noext);
  ASSERT_EQ((*all)->documents(), 6);
  EXPECT_EQ((*all)->total_tokens(), 11);
  const std::vector<std::vector<int32_t>> want = {{1, 2}, {3}, {4, 5, 6}, {10, 11}, {12, 13}, {9}};
  for (int64_t d = 0; d < 6; ++d) {
    EXPECT_EQ((*all)->document_length(d), static_cast<int64_t>(want[d].size()));
    EXPECT_EQ(*(*all)->ReadDocument(d), want[d]) << "document " << d;
  }
  EXPECT_EQ(*(*all)->ReadTokens(2, 1, 3), (std::vector<int32_t>{5, 6}));
  EXPECT_FALSE((*all)->ReadTokens(6, 0, 0).ok());

  ExpectErrorNaming(OpenTokenSource(shard + ",," + megatron).status(), "entry 1 is empty");
  ExpectErrorNaming(OpenTokenSource(shard + "," + JoinPath(dir, "nope")).status(), JoinPath(dir, "nope"));
  WriteBytes(JoinPath(dir, "notes.txt"), "hello");
  ExpectErrorNaming(OpenTokenSource(JoinPath(dir, "notes.txt")).status(), JoinPath(dir, "notes.txt"), "not a token");
  // A damaged shard in a list is reported under its own name.
  WriteBytes(JoinPath(dir, "bad.ictok"), "ICTOKSH1");
  ExpectErrorNaming(OpenTokenSource(shard + "," + JoinPath(dir, "bad.ictok")).status(), JoinPath(dir, "bad.ictok"));
}

}  // namespace
}  // namespace indexcache
