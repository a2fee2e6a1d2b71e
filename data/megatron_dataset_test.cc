// Tests for data/megatron_dataset: our writer against a byte layout built by hand the way
// Megatron-LM's IndexedDatasetBuilder lays it out, reading back every integer dtype, and one
// Status naming the file for each kind of damage.
#include "data/megatron_dataset.h"

#include <stdlib.h>

#include <cstring>
#include <fstream>
#include <limits>
#include <sstream>
#include <string>
#include <vector>

#include "core/file_util.h"
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

// The .idx exactly as Megatron writes it: struct.pack("<Q", 1), struct.pack("<B", code),
// struct.pack("<Q", N), struct.pack("<Q", D), then the three numpy arrays' tobytes(order="C").
std::string MegatronIdx(uint8_t code, const std::vector<int32_t>& sizes, const std::vector<int64_t>& pointers,
                        const std::vector<int64_t>& doc_idx) {
  return std::string("MMIDIDX\x00\x00", 9) + Raw1<uint64_t>(1) + Raw1<uint8_t>(code) +
         Raw1<uint64_t>(sizes.size()) + Raw1<uint64_t>(doc_idx.size()) + Raw(sizes) + Raw(pointers) + Raw(doc_idx);
}

// The error must be a single line that names `file`.
void ExpectErrorNaming(const Status& s, const std::string& file, const std::string& fragment = "") {
  ASSERT_FALSE(s.ok());
  EXPECT_NE(s.message().find(file), std::string::npos) << s.ToString();
  EXPECT_EQ(s.message().find('\n'), std::string::npos) << s.ToString();
  if (!fragment.empty()) {
    EXPECT_NE(s.message().find(fragment), std::string::npos) << s.ToString();
  }
}

TEST(MegatronWriter, MatchesMegatronByteLayout) {
  const std::string prefix = JoinPath(MakeTempDir(), "corpus_text_document");
  // Two documents: the first split into two sentences (--split-sentences), the second one.
  auto writer = MegatronDatasetWriter::Create(prefix, MegatronDType::kUInt16);
  ASSERT_TRUE(writer.ok()) << writer.status().ToString();
  ASSERT_TRUE((*writer)->AddSequence(std::vector<int32_t>{1, 2, 3}).ok());
  ASSERT_TRUE((*writer)->AddSequence(std::vector<int32_t>{65535, 0}).ok());
  ASSERT_TRUE((*writer)->EndDocument().ok());
  ASSERT_TRUE((*writer)->AddSequence(std::vector<int64_t>{7, 8, 9, 10}).ok());
  ASSERT_TRUE((*writer)->Finish().ok());  // ends the pending second document

  EXPECT_EQ(ReadBytes(prefix + ".idx"), MegatronIdx(8, {3, 2, 4}, {0, 6, 10}, {0, 2, 3}));
  EXPECT_EQ(ReadBytes(prefix + ".bin"), Raw(std::vector<uint16_t>{1, 2, 3, 65535, 0, 7, 8, 9, 10}));
  EXPECT_FALSE(FileExists(prefix + ".bin.tmp." + std::to_string(::getpid())));
}

TEST(MegatronReader, ReadsHandBuiltDataset) {
  const std::string prefix = JoinPath(MakeTempDir(), "hand");
  // int32 tokens; sequences stored out of order in .bin (pointers need not increase), a
  // three-sequence document, an empty document, and an empty sequence.
  std::vector<int32_t> bin = {100, 101, 102, /*seq 2*/ 7, 8, /*seq 0*/ 1, 2, 3, 4, /*seq 1*/ 5, 6};
  WriteBytes(prefix + ".bin", Raw(bin));
  // seq 0 at byte 20 (4 tokens), seq 1 at 36 (2), seq 2 at 12 (2), seq 3 at 0 (3), seq 4 empty.
  WriteBytes(prefix + ".idx", MegatronIdx(4, {4, 2, 2, 3, 0}, {20, 36, 12, 0, 44}, {0, 3, 3, 5}));
  auto ds = MegatronDataset::Open(prefix);
  ASSERT_TRUE(ds.ok()) << ds.status().ToString();
  const MegatronDataset& d = **ds;
  EXPECT_EQ(d.dtype(), MegatronDType::kInt32);
  EXPECT_EQ(d.sequences(), 5);
  ASSERT_EQ(d.documents(), 3);
  EXPECT_EQ(d.document_length(0), 8);
  EXPECT_EQ(d.document_length(1), 0);
  EXPECT_EQ(d.document_length(2), 3);
  EXPECT_EQ(d.total_tokens(), 11);
  EXPECT_EQ(*d.ReadDocument(0), (std::vector<int32_t>{1, 2, 3, 4, 5, 6, 7, 8}));
  EXPECT_TRUE(d.ReadDocument(1)->empty());
  EXPECT_EQ(*d.ReadDocument(2), (std::vector<int32_t>{100, 101, 102}));
  // A range spanning all three sequences of document 0, and single tokens.
  EXPECT_EQ(*d.ReadTokens(0, 3, 7), (std::vector<int32_t>{4, 5, 6, 7}));
  EXPECT_EQ(*d.Token(0, 5), 6);
  EXPECT_EQ(*d.Token(2, 2), 102);
  // Ranges outside the document are errors, not crashes.
  EXPECT_FALSE(d.ReadTokens(0, 6, 9).ok());
  EXPECT_FALSE(d.ReadTokens(3, 0, 0).ok());
  EXPECT_FALSE(d.Token(0, -1).ok());
}

TEST(MegatronReader, RoundTripsEveryIntegerDType) {
  const std::string dir = MakeTempDir();
  const std::vector<std::vector<int32_t>> docs = {{0, 1, 127}, {}, {5}};
  for (MegatronDType t : {MegatronDType::kUInt8, MegatronDType::kInt8, MegatronDType::kInt16, MegatronDType::kInt32,
                          MegatronDType::kInt64, MegatronDType::kUInt16}) {
    const std::string prefix = JoinPath(dir, std::string("ds_") + MegatronDTypeName(t));
    ASSERT_TRUE(WriteMegatronDataset(prefix, t, docs).ok());
    auto ds = MegatronDataset::Open(prefix);
    ASSERT_TRUE(ds.ok()) << ds.status().ToString();
    EXPECT_EQ((*ds)->dtype(), t);
    EXPECT_EQ(ReadBytes(prefix + ".bin").size(), 4u * MegatronDTypeSize(t));
    ASSERT_EQ((*ds)->documents(), 3);
    for (int64_t i = 0; i < 3; ++i) EXPECT_EQ(*(*ds)->ReadDocument(i), docs[i]) << MegatronDTypeName(t);
  }
}

TEST(MegatronReader, TokenAboveInt32MaxIsAnErrorNamingTheBin) {
  const std::string prefix = JoinPath(MakeTempDir(), "big");
  auto writer = MegatronDatasetWriter::Create(prefix, MegatronDType::kInt64);
  ASSERT_TRUE(writer.ok());
  // The writer refuses ids our reader could not return...
  const Status refused = (*writer)->AddSequence(std::vector<int64_t>{1, int64_t{1} << 31});
  ExpectErrorNaming(refused, prefix + ".bin", "position 1");
  // ...so build the file Megatron itself could have written by hand.
  WriteBytes(prefix + ".bin", Raw(std::vector<int64_t>{1, 2, (int64_t{1} << 31) + 5}));
  WriteBytes(prefix + ".idx", MegatronIdx(5, {3}, {0}, {0, 1}));
  auto ds = MegatronDataset::Open(prefix);
  ASSERT_TRUE(ds.ok()) << ds.status().ToString();
  EXPECT_EQ(*(*ds)->ReadTokens(0, 0, 2), (std::vector<int32_t>{1, 2}));  // the good prefix still reads
  auto bad = (*ds)->ReadDocument(0);
  ExpectErrorNaming(bad.status(), prefix + ".bin", "2147483653 at byte offset 16");
  EXPECT_EQ(bad.status().code(), StatusCode::kDataLoss);

  // Negative ids in a signed dtype likewise.
  WriteBytes(prefix + ".bin", Raw(std::vector<int16_t>{3, -4}));
  WriteBytes(prefix + ".idx", MegatronIdx(3, {2}, {0}, {0, 1}));
  ds = MegatronDataset::Open(prefix);
  ASSERT_TRUE(ds.ok());
  ExpectErrorNaming((*ds)->Token(0, 1).status(), prefix + ".bin", "-4");
}

TEST(MegatronWriter, RefusesFloatDTypesAndValuesTooLargeForTheDType) {
  const std::string dir = MakeTempDir();
  EXPECT_FALSE(MegatronDatasetWriter::Create(JoinPath(dir, "f"), MegatronDType::kFloat32).ok());
  ExpectErrorNaming(WriteMegatronDataset(JoinPath(dir, "u8"), MegatronDType::kUInt8, {{1, 256}}),
                    JoinPath(dir, "u8.bin"), "256");
  ExpectErrorNaming(WriteMegatronDataset(JoinPath(dir, "neg"), MegatronDType::kInt32, {{-1}}),
                    JoinPath(dir, "neg.bin"));
  // A failed write leaves no files behind.
  EXPECT_FALSE(FileExists(JoinPath(dir, "u8.bin")));
  EXPECT_FALSE(FileExists(JoinPath(dir, "u8.idx")));
  EXPECT_EQ(MegatronOptimalDType(50000), MegatronDType::kUInt16);
  EXPECT_EQ(MegatronOptimalDType(151936), MegatronDType::kInt32);
}

// Damaged files: each is refused with a one-line Status naming the file at fault.
class MegatronDamage : public ::testing::Test {
 protected:
  void SetUp() override {
    prefix_ = JoinPath(MakeTempDir(), "ds");
    WriteBytes(prefix_ + ".bin", Raw(std::vector<uint16_t>{1, 2, 3, 4, 5}));
  }
  Status OpenWithIdx(const std::string& idx) {
    WriteBytes(prefix_ + ".idx", idx);
    return MegatronDataset::Open(prefix_).status();
  }
  std::string Good() const { return MegatronIdx(8, {2, 3}, {0, 4}, {0, 1, 2}); }
  std::string idx() const { return prefix_ + ".idx"; }
  std::string prefix_;
};

TEST_F(MegatronDamage, GoodIndexOpens) { EXPECT_TRUE(OpenWithIdx(Good()).ok()); }

TEST_F(MegatronDamage, WrongMagic) {
  std::string s = Good();
  s[0] = 'X';
  ExpectErrorNaming(OpenWithIdx(s), idx(), "magic");
}

TEST_F(MegatronDamage, TruncatedIdx) {
  ExpectErrorNaming(OpenWithIdx(Good().substr(0, 20)), idx(), "truncated header");
  ExpectErrorNaming(OpenWithIdx(Good().substr(0, Good().size() - 1)), idx(), "truncated");
  // A corrupt count that would overflow a naive size computation.
  std::string s = Good();
  const uint64_t huge = ~uint64_t{0} / 4;
  std::memcpy(&s[18], &huge, 8);
  ExpectErrorNaming(OpenWithIdx(s), idx(), "truncated");
}

TEST_F(MegatronDamage, TrailingBytes) {
  ExpectErrorNaming(OpenWithIdx(Good() + "xyz"), idx(), "trailing");
  // Multimodal datasets append one mode byte per sequence: accepted.
  EXPECT_TRUE(OpenWithIdx(Good() + std::string(2, '\0')).ok());
}

TEST_F(MegatronDamage, PointerPastBinEnd) {
  // The second sequence (3 tokens) starting at byte 6 needs bytes up to 12; .bin has 10.
  const Status s = OpenWithIdx(MegatronIdx(8, {2, 3}, {0, 6}, {0, 1, 2}));
  ExpectErrorNaming(s, idx(), "pointers[1]");
  ExpectErrorNaming(s, prefix_ + ".bin");
  ExpectErrorNaming(OpenWithIdx(MegatronIdx(8, {2, 3}, {0, -2}, {0, 1, 2})), idx(), "pointers[1]");
  ExpectErrorNaming(OpenWithIdx(MegatronIdx(8, {-2, 3}, {0, 4}, {0, 1, 2})), idx(), "sizes[0]");
}

TEST_F(MegatronDamage, BadDType) {
  std::string s = Good();
  s[17] = 9;
  ExpectErrorNaming(OpenWithIdx(s), idx(), "dtype code 9");
  s[17] = 0;
  ExpectErrorNaming(OpenWithIdx(s), idx(), "dtype code 0");
  s[17] = 7;  // float32: a valid Megatron dtype but not one for token ids
  ExpectErrorNaming(OpenWithIdx(s), idx(), "float32");
}

TEST_F(MegatronDamage, BadVersion) {
  std::string s = Good();
  s[9] = 2;
  ExpectErrorNaming(OpenWithIdx(s), idx(), "version 2");
}

TEST_F(MegatronDamage, DocIdxNotEndingAtN) {
  ExpectErrorNaming(OpenWithIdx(MegatronIdx(8, {2, 3}, {0, 4}, {0, 1})), idx(), "doc_idx[1]");
  ExpectErrorNaming(OpenWithIdx(MegatronIdx(8, {2, 3}, {0, 4}, {0, 1, 3})), idx(), "doc_idx[2]");
  ExpectErrorNaming(OpenWithIdx(MegatronIdx(8, {2, 3}, {0, 4}, {1, 2})), idx(), "doc_idx[0]");
  ExpectErrorNaming(OpenWithIdx(MegatronIdx(8, {2, 3}, {0, 4}, {0, 2, 1, 2})), idx(), "less than");
  ExpectErrorNaming(OpenWithIdx(MegatronIdx(8, {2, 3}, {0, 4}, {})), idx(), "document index count is 0");
}

TEST_F(MegatronDamage, MissingFiles) {
  WriteBytes(prefix_ + ".idx", Good());
  ::unlink((prefix_ + ".bin").c_str());
  ExpectErrorNaming(MegatronDataset::Open(prefix_).status(), prefix_ + ".bin");
  ExpectErrorNaming(MegatronDataset::Open(prefix_ + "_nope").status(), prefix_ + "_nope.idx");
}

TEST(OpenTokenSource, OpensMegatronByPrefixOrEitherFile) {
  const std::string prefix = JoinPath(MakeTempDir(), "corpus");
  ASSERT_TRUE(WriteMegatronDataset(prefix, MegatronDType::kUInt16, {{1, 2}, {3}}).ok());
  for (const std::string& path : {prefix, prefix + ".idx", prefix + ".bin"}) {
    auto src = OpenTokenSource(path);
    ASSERT_TRUE(src.ok()) << path << ": " << src.status().ToString();
    EXPECT_EQ((*src)->name(), prefix);
    EXPECT_EQ((*src)->documents(), 2);
    EXPECT_EQ(*(*src)->ReadDocument(1), std::vector<int32_t>{3});
  }
  ExpectErrorNaming(OpenTokenSource(prefix + "_missing").status(), prefix + "_missing");
}

}  // namespace
}  // namespace indexcache
