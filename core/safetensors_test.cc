// Tests for core/safetensors: byte-exact round trips, the on-disk layout, multi-shard checkpoints,
// and that every kind of broken file gives a Status naming the file (and tensor), never a crash.
#include "core/safetensors.h"

#include <dirent.h>
#include <stdlib.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "core/test_util.h"

namespace indexcache {
namespace {

std::vector<std::string> ListDir(const std::string& dir) {
  std::vector<std::string> names;
  if (DIR* d = ::opendir(dir.c_str())) {
    while (dirent* ent = ::readdir(d)) {
      const std::string n = ent->d_name;
      if (n != "." && n != "..") names.push_back(n);
    }
    ::closedir(d);
  }
  std::sort(names.begin(), names.end());
  return names;
}

// A safetensors file from a hand-written header and data section.
std::string RawSafetensors(const std::string& header, const std::string& data) {
  std::string out(8, '\0');
  const uint64_t len = header.size();
  for (int i = 0; i < 8; ++i) out[i] = static_cast<char>((len >> (8 * i)) & 0xff);
  return out + header + data;
}

// A tensor whose bytes are a pattern that differs per tensor (`seed`) and per byte position, so
// a swapped or shifted data range shows up in a byte comparison.
Tensor Patterned(DType dtype, Shape shape, int seed) {
  Tensor t = Tensor::Zeros(dtype, std::move(shape));
  uint8_t* p = t.data<uint8_t>();
  for (int64_t i = 0; i < t.nbytes(); ++i) p[i] = static_cast<uint8_t>(i * 37 + seed * 101 + 1);
  return t;
}

std::string Bytes(const Tensor& t) {
  return std::string(static_cast<const char*>(t.raw()), static_cast<size_t>(t.nbytes()));
}

bool Contains(const std::string& haystack, const std::string& needle) {
  return haystack.find(needle) != std::string::npos;
}

// Checks that `status` is an error of `code` whose message mentions every one of `needles`.
void ExpectError(const Status& status, StatusCode code, const std::vector<std::string>& needles) {
  ASSERT_FALSE(status.ok());
  EXPECT_EQ(status.code(), code) << status.ToString();
  for (const std::string& n : needles) EXPECT_TRUE(Contains(status.message(), n)) << status.ToString() << " lacks " << n;
}

NamedTensors SampleTensors() {
  NamedTensors tensors;
  tensors.emplace_back("layers.0.weight", Patterned(DType::kF32, {2, 3}, 1));
  tensors.emplace_back("layers.0.bias_bf16", Patterned(DType::kBF16, {5}, 2));  // 10 bytes: odd offsets after it
  tensors.emplace_back("experts.w_fp8", Patterned(DType::kF8E4M3, {3, 1, 7}, 3));
  tensors.emplace_back("token_ids", Patterned(DType::kI64, {4}, 4));
  tensors.emplace_back("scalar", Patterned(DType::kF32, {}, 5));      // 0-d: one element
  tensors.emplace_back("empty", Patterned(DType::kF32, {0, 4}, 6));   // zero elements
  tensors.emplace_back("mask", Patterned(DType::kU8, {3}, 7));
  return tensors;
}

TEST(SafetensorsTest, RoundTripIsByteExact) {
  const std::string path = JoinPath(MakeTempDir(), "model.safetensors");
  const NamedTensors tensors = SampleTensors();
  const std::map<std::string, std::string> metadata = {{"format", "pt"}, {"step", "1200"}};
  ASSERT_TRUE(WriteSafetensors(path, tensors, metadata).ok());

  auto file = SafetensorsFile::Open(path);
  ASSERT_TRUE(file.ok()) << file.status().ToString();
  EXPECT_EQ((*file)->path(), path);
  EXPECT_EQ((*file)->metadata(), metadata);
  std::vector<std::string> expected_names;
  for (const auto& [name, t] : tensors) expected_names.push_back(name);
  std::sort(expected_names.begin(), expected_names.end());
  EXPECT_EQ((*file)->names(), expected_names);  // __metadata__ is not a tensor

  for (const auto& [name, t] : tensors) {
    SCOPED_TRACE(name);
    EXPECT_TRUE((*file)->Has(name));
    auto got = (*file)->Get(name);
    ASSERT_TRUE(got.ok()) << got.status().ToString();
    EXPECT_EQ(got->dtype(), t.dtype());
    EXPECT_EQ(got->shape(), t.shape());
    EXPECT_EQ(got->nbytes(), t.nbytes());
    EXPECT_EQ(Bytes(*got), Bytes(t));
  }
  auto scalar = (*file)->Get("scalar");
  ASSERT_TRUE(scalar.ok());
  EXPECT_EQ(scalar->dim(), 0);
  EXPECT_EQ(scalar->numel(), 1);
  auto empty = (*file)->Get("empty");
  ASSERT_TRUE(empty.ok());
  EXPECT_EQ(empty->numel(), 0);
}

TEST(SafetensorsTest, LayoutHasAlignedDataSection) {
  const std::string path = JoinPath(MakeTempDir(), "x.safetensors");
  const NamedTensors tensors = SampleTensors();
  ASSERT_TRUE(WriteSafetensors(path, tensors, {{"k", "v"}}).ok());
  const std::string bytes = ReadBytes(path);
  ASSERT_GE(bytes.size(), 8u);
  uint64_t header_len = 0;
  for (int i = 0; i < 8; ++i) header_len |= static_cast<uint64_t>(static_cast<uint8_t>(bytes[i])) << (8 * i);
  // The data section starts at 8 + header_len, which must be a multiple of 8 so that mapped
  // tensors of 8-byte types are naturally aligned.
  EXPECT_EQ((8 + header_len) % 8, 0u);
  int64_t data_bytes = 0;
  for (const auto& [name, t] : tensors) data_bytes += t.nbytes();
  EXPECT_EQ(bytes.size(), 8 + header_len + data_bytes);
  const std::string header = bytes.substr(8, header_len);
  EXPECT_EQ(header.front(), '{');
  EXPECT_TRUE(Contains(header, "\"F8_E4M3\""));
  EXPECT_TRUE(Contains(header, "\"__metadata__\""));
  // The data section is the tensors' bytes back to back in the order given.
  std::string expected_data;
  for (const auto& [name, t] : tensors) expected_data += Bytes(t);
  EXPECT_EQ(bytes.substr(8 + header_len), expected_data);
}

TEST(SafetensorsTest, TensorKeepsMappingAliveAfterFileIsReleased) {
  const std::string path = JoinPath(MakeTempDir(), "x.safetensors");
  const Tensor w = Patterned(DType::kI64, {16}, 9);
  ASSERT_TRUE(WriteSafetensors(path, {{"w", w}}).ok());
  Tensor view;
  {
    auto file = SafetensorsFile::Open(path);
    ASSERT_TRUE(file.ok());
    auto got = (*file)->Get("w");
    ASSERT_TRUE(got.ok());
    view = *got;
  }
  EXPECT_EQ(Bytes(view), Bytes(w));
}

TEST(SafetensorsTest, ReadsHandWrittenFile) {
  // Unpadded header (data section not aligned), no metadata, and entries whose data order
  // differs from the header's key order: offsets are relative to the end of the header.
  const std::string dir = MakeTempDir();
  const std::string path = JoinPath(dir, "hand.safetensors");
  const std::string header =
      R"({"b":{"dtype":"I32","shape":[1],"data_offsets":[0,4]},"a":{"dtype":"BF16","shape":[2],"data_offsets":[4,8]}})";
  WriteBytes(path, RawSafetensors(header, std::string("\x01\x02\x03\x04\x80\x3f\x00\xc0", 8)));
  auto file = SafetensorsFile::Open(path);
  ASSERT_TRUE(file.ok()) << file.status().ToString();
  EXPECT_TRUE((*file)->metadata().empty());
  auto b = (*file)->Get("b");
  ASSERT_TRUE(b.ok());
  EXPECT_EQ(b->dtype(), DType::kI32);
  EXPECT_EQ(b->data<int32_t>()[0], 0x04030201);
  auto a = (*file)->Get("a");
  ASSERT_TRUE(a.ok());
  const Tensor af = a->ToFloat32();
  EXPECT_EQ(af.data<float>()[0], 1.0f);   // bf16 0x3f80
  EXPECT_EQ(af.data<float>()[1], -2.0f);  // bf16 0xc000
}

TEST(SafetensorsTest, EmptyFileListRoundTrips) {
  const std::string path = JoinPath(MakeTempDir(), "none.safetensors");
  ASSERT_TRUE(WriteSafetensors(path, {}).ok());
  auto file = SafetensorsFile::Open(path);
  ASSERT_TRUE(file.ok()) << file.status().ToString();
  EXPECT_TRUE((*file)->names().empty());
}

TEST(SafetensorsTest, AtomicWriteLeavesNoTempFile) {
  const std::string dir = MakeTempDir();
  const std::string path = JoinPath(dir, "w.safetensors");
  ASSERT_TRUE(WriteSafetensors(path, {{"a", Patterned(DType::kF32, {4}, 1)}}).ok());
  EXPECT_EQ(ListDir(dir), std::vector<std::string>{"w.safetensors"});
  // Overwriting replaces the contents and still leaves a single file.
  const Tensor b = Patterned(DType::kF32, {8}, 2);
  ASSERT_TRUE(WriteSafetensors(path, {{"b", b}}).ok());
  EXPECT_EQ(ListDir(dir), std::vector<std::string>{"w.safetensors"});
  auto file = SafetensorsFile::Open(path);
  ASSERT_TRUE(file.ok());
  EXPECT_EQ((*file)->names(), std::vector<std::string>{"b"});
  // A failed write (duplicate names) leaves the old file alone and no temp file behind.
  const Tensor t = Patterned(DType::kF32, {1}, 3);
  ExpectError(WriteSafetensors(path, {{"d", t}, {"d", t}}), StatusCode::kInvalidArgument, {path, "'d'"});
  EXPECT_EQ(ListDir(dir), std::vector<std::string>{"w.safetensors"});
  auto again = SafetensorsFile::Open(path);
  ASSERT_TRUE(again.ok());
  EXPECT_EQ((*again)->names(), std::vector<std::string>{"b"});
  // A directory that does not exist: an error naming the path, not a crash.
  const std::string missing = JoinPath(dir, "no/such/dir/x.safetensors");
  EXPECT_FALSE(WriteSafetensors(missing, {{"a", t}}).ok());
}

TEST(SafetensorsTest, WriteRejectsReservedNameAndEmptyTensor) {
  const std::string path = JoinPath(MakeTempDir(), "x.safetensors");
  // "__metadata__" as a tensor name would produce a file that cannot be read back.
  ExpectError(WriteSafetensors(path, {{"__metadata__", Patterned(DType::kF32, {1}, 1)}}),
              StatusCode::kInvalidArgument, {path});
  ExpectError(WriteSafetensors(path, {{"nothing", Tensor()}}), StatusCode::kInvalidArgument, {path, "nothing"});
  EXPECT_FALSE(FileExists(path));
}

// ---------------------------------------------------------------------------------------------
// Checkpoint directories.

TEST(SafetensorsCheckpointTest, ShardedWithIndex) {
  const std::string dir = MakeTempDir();
  const std::string shard1 = "model-00001-of-00002.safetensors", shard2 = "model-00002-of-00002.safetensors";
  const Tensor a = Patterned(DType::kBF16, {2, 2}, 1), b = Patterned(DType::kF32, {3}, 2),
               c = Patterned(DType::kF8E4M3, {4, 4}, 3);
  ASSERT_TRUE(WriteSafetensors(JoinPath(dir, shard1), {{"a", a}, {"b", b}}).ok());
  ASSERT_TRUE(WriteSafetensors(JoinPath(dir, shard2), {{"c", c}}).ok());
  WriteBytes(JoinPath(dir, "model.safetensors.index.json"),
             R"({"metadata": {"total_size": 36},
                 "weight_map": {"a": ")" + shard1 + R"(", "b": ")" + shard1 + R"(", "c": ")" + shard2 + R"("}})");

  auto ckpt = SafetensorsCheckpoint::Open(dir);
  ASSERT_TRUE(ckpt.ok()) << ckpt.status().ToString();
  EXPECT_EQ(ckpt->dir(), dir);
  EXPECT_EQ(ckpt->names(), (std::vector<std::string>{"a", "b", "c"}));
  EXPECT_EQ(ckpt->shard_files(), (std::vector<std::string>{shard1, shard2}));
  EXPECT_EQ(ckpt->ShardOf("a"), shard1);
  EXPECT_EQ(ckpt->ShardOf("c"), shard2);
  EXPECT_EQ(ckpt->ShardOf("zzz"), "");
  EXPECT_TRUE(ckpt->Has("b"));
  EXPECT_FALSE(ckpt->Has("zzz"));
  for (const auto& [name, want] : NamedTensors{{"a", a}, {"b", b}, {"c", c}}) {
    auto got = ckpt->Get(name);
    ASSERT_TRUE(got.ok()) << got.status().ToString();
    EXPECT_EQ(got->dtype(), want.dtype()) << name;
    EXPECT_EQ(got->shape(), want.shape()) << name;
    EXPECT_EQ(Bytes(*got), Bytes(want)) << name;
  }
  ExpectError(ckpt->Get("missing.weight").status(), StatusCode::kNotFound, {dir, "missing.weight"});
}

TEST(SafetensorsCheckpointTest, IndexNamingATensorTheShardLacks) {
  const std::string dir = MakeTempDir();
  ASSERT_TRUE(WriteSafetensors(JoinPath(dir, "s1.safetensors"), {{"a", Patterned(DType::kF32, {1}, 1)}}).ok());
  WriteBytes(JoinPath(dir, "model.safetensors.index.json"),
             R"({"weight_map": {"a": "s1.safetensors", "ghost": "s1.safetensors"}})");
  auto ckpt = SafetensorsCheckpoint::Open(dir);
  ASSERT_TRUE(ckpt.ok()) << ckpt.status().ToString();
  ExpectError(ckpt->Get("ghost").status(), StatusCode::kNotFound, {"s1.safetensors", "ghost"});
}

TEST(SafetensorsCheckpointTest, IndexPointingAtMissingShard) {
  const std::string dir = MakeTempDir();
  ASSERT_TRUE(WriteSafetensors(JoinPath(dir, "s1.safetensors"), {{"a", Patterned(DType::kF32, {1}, 1)}}).ok());
  WriteBytes(JoinPath(dir, "model.safetensors.index.json"),
             R"({"weight_map": {"a": "s1.safetensors", "b": "s2.safetensors"}})");
  auto ckpt = SafetensorsCheckpoint::Open(dir);
  ExpectError(ckpt.status(), StatusCode::kNotFound, {"model.safetensors.index.json", "s2.safetensors", "'b'"});
}

TEST(SafetensorsCheckpointTest, CorruptShardErrorNamesShardAndTensor) {
  // Shards behind an index open lazily, so the error appears at Get and must say which tensor.
  const std::string dir = MakeTempDir();
  WriteBytes(JoinPath(dir, "s1.safetensors"), "bad");
  WriteBytes(JoinPath(dir, "model.safetensors.index.json"), R"({"weight_map": {"w": "s1.safetensors"}})");
  auto ckpt = SafetensorsCheckpoint::Open(dir);
  ASSERT_TRUE(ckpt.ok()) << ckpt.status().ToString();
  ExpectError(ckpt->Get("w").status(), StatusCode::kDataLoss, {JoinPath(dir, "s1.safetensors"), "'w'"});
}

TEST(SafetensorsCheckpointTest, MalformedIndex) {
  const std::string dir = MakeTempDir();
  const std::string index = JoinPath(dir, "model.safetensors.index.json");
  WriteBytes(index, R"({"weight_map": ["a"]})");
  ExpectError(SafetensorsCheckpoint::Open(dir).status(), StatusCode::kDataLoss, {index});
  WriteBytes(index, "{not json");
  ExpectError(SafetensorsCheckpoint::Open(dir).status(), StatusCode::kDataLoss, {index});
  WriteBytes(index, R"({"weight_map": {"a": 3}})");
  ExpectError(SafetensorsCheckpoint::Open(dir).status(), StatusCode::kDataLoss, {index, "'a'"});
}

TEST(SafetensorsCheckpointTest, DirectoryOfShardsWithoutIndex) {
  const std::string dir = MakeTempDir();
  const Tensor x = Patterned(DType::kI64, {2}, 1), y = Patterned(DType::kF32, {}, 2), z = Patterned(DType::kU8, {0}, 3);
  ASSERT_TRUE(WriteSafetensors(JoinPath(dir, "part-b.safetensors"), {{"y", y}, {"z", z}}).ok());
  ASSERT_TRUE(WriteSafetensors(JoinPath(dir, "part-a.safetensors"), {{"x", x}}).ok());
  // Files that are not shards must be ignored, including a leftover temp file from a crash.
  WriteBytes(JoinPath(dir, "config.json"), "{}");
  WriteBytes(JoinPath(dir, "part-c.safetensors.tmp.123"), "garbage");
  auto ckpt = SafetensorsCheckpoint::Open(dir);
  ASSERT_TRUE(ckpt.ok()) << ckpt.status().ToString();
  EXPECT_EQ(ckpt->names(), (std::vector<std::string>{"x", "y", "z"}));
  EXPECT_EQ(ckpt->shard_files(), (std::vector<std::string>{"part-a.safetensors", "part-b.safetensors"}));
  EXPECT_EQ(ckpt->ShardOf("x"), "part-a.safetensors");
  EXPECT_EQ(ckpt->ShardOf("z"), "part-b.safetensors");
  auto got = ckpt->Get("x");
  ASSERT_TRUE(got.ok());
  EXPECT_EQ(Bytes(*got), Bytes(x));
  auto gz = ckpt->Get("z");
  ASSERT_TRUE(gz.ok());
  EXPECT_EQ(gz->numel(), 0);
}

TEST(SafetensorsCheckpointTest, SingleModelFileAndErrors) {
  const std::string dir = MakeTempDir();
  ASSERT_TRUE(WriteSafetensors(JoinPath(dir, "model.safetensors"), {{"w", Patterned(DType::kF32, {2}, 1)}}).ok());
  auto ckpt = SafetensorsCheckpoint::Open(dir);
  ASSERT_TRUE(ckpt.ok()) << ckpt.status().ToString();
  EXPECT_EQ(ckpt->ShardOf("w"), "model.safetensors");

  ExpectError(SafetensorsCheckpoint::Open(MakeTempDir()).status(), StatusCode::kNotFound, {});
  ExpectError(SafetensorsCheckpoint::Open(JoinPath(dir, "nope")).status(), StatusCode::kNotFound, {"nope"});
}

TEST(SafetensorsCheckpointTest, SameTensorInTwoShardsIsAnError) {
  const std::string dir = MakeTempDir();
  ASSERT_TRUE(WriteSafetensors(JoinPath(dir, "a.safetensors"), {{"w", Patterned(DType::kF32, {1}, 1)}}).ok());
  ASSERT_TRUE(WriteSafetensors(JoinPath(dir, "b.safetensors"), {{"w", Patterned(DType::kF32, {1}, 2)}}).ok());
  ExpectError(SafetensorsCheckpoint::Open(dir).status(), StatusCode::kDataLoss,
              {"a.safetensors", "b.safetensors", "'w'"});
}

// ---------------------------------------------------------------------------------------------
// Broken files: each must give DataLoss/NotFound naming the file, and the tensor where there is one.

class BadFileTest : public ::testing::Test {
 protected:
  void SetUp() override { path_ = JoinPath(MakeTempDir(), "bad.safetensors"); }
  Status OpenStatus() { return SafetensorsFile::Open(path_).status(); }
  void WriteHeader(const std::string& header, const std::string& data) { WriteBytes(path_, RawSafetensors(header, data)); }
  std::string path_;
};

TEST_F(BadFileTest, MissingFile) { ExpectError(OpenStatus(), StatusCode::kNotFound, {path_}); }

TEST_F(BadFileTest, ShorterThanEightBytes) {
  WriteBytes(path_, "");
  ExpectError(OpenStatus(), StatusCode::kDataLoss, {path_});
  WriteBytes(path_, std::string("\x02\x00\x00", 3));
  ExpectError(OpenStatus(), StatusCode::kDataLoss, {path_});
}

TEST_F(BadFileTest, HeaderLengthPastEnd) {
  std::string bytes = RawSafetensors("{}", "");
  bytes[0] = 100;  // claims 100 header bytes; there are 2
  WriteBytes(path_, bytes);
  ExpectError(OpenStatus(), StatusCode::kDataLoss, {path_});
  // A length near 2^64 must not wrap around in the bounds arithmetic.
  bytes = RawSafetensors("{}", "");
  std::memset(&bytes[0], 0xff, 8);
  WriteBytes(path_, bytes);
  ExpectError(OpenStatus(), StatusCode::kDataLoss, {path_});
}

TEST_F(BadFileTest, MalformedHeaderJson) {
  WriteHeader(R"({"w": {"dtype": "F32", )", "");
  ExpectError(OpenStatus(), StatusCode::kDataLoss, {path_});
  WriteHeader(R"([1, 2, 3])", "");  // valid JSON, but not an object
  ExpectError(OpenStatus(), StatusCode::kDataLoss, {path_});
  WriteHeader(R"({"w": {"dtype": "F32", "shape": [1]}})", "abcd");  // no data_offsets
  ExpectError(OpenStatus(), StatusCode::kDataLoss, {path_, "'w'"});
  WriteHeader(R"({"w": {"dtype": "F32", "shape": [-1], "data_offsets": [0, 4]}})", "abcd");
  ExpectError(OpenStatus(), StatusCode::kDataLoss, {path_, "'w'"});
  WriteHeader(R"({"w": {"dtype": "F32", "shape": [1], "data_offsets": [4, 0]}})", "abcd");
  ExpectError(OpenStatus(), StatusCode::kDataLoss, {path_, "'w'"});
  WriteHeader(R"({"__metadata__": {"step": 3}})", "");
  ExpectError(OpenStatus(), StatusCode::kDataLoss, {path_, "step"});
}

TEST_F(BadFileTest, UnknownDtype) {
  WriteHeader(R"({"w": {"dtype": "F8_E5M2", "shape": [4], "data_offsets": [0, 4]}})", "abcd");
  ExpectError(OpenStatus(), StatusCode::kDataLoss, {path_, "'w'", "F8_E5M2"});
}

TEST_F(BadFileTest, OffsetsDisagreeWithShape) {
  // [2, 2] F32 needs 16 bytes; the offsets give 12.
  WriteHeader(R"({"w": {"dtype": "F32", "shape": [2, 2], "data_offsets": [0, 12]}})", std::string(16, 'x'));
  ExpectError(OpenStatus(), StatusCode::kDataLoss, {path_, "'w'"});
  // A shape whose byte size overflows 64 bits must not wrap around to a small number.
  WriteHeader(R"({"w": {"dtype": "F32", "shape": [4294967296, 4294967296], "data_offsets": [0, 0]}})", "");
  ExpectError(OpenStatus(), StatusCode::kDataLoss, {path_, "'w'"});
}

TEST_F(BadFileTest, TruncatedDataSection) {
  // A valid file cut short by 3 bytes: the last tensor's range runs past the end.
  ASSERT_TRUE(WriteSafetensors(path_, {{"first", Patterned(DType::kF32, {4}, 1)},
                                       {"last", Patterned(DType::kI64, {2}, 2)}}).ok());
  const std::string full = ReadBytes(path_);
  ASSERT_EQ(::truncate(path_.c_str(), static_cast<off_t>(full.size() - 3)), 0);
  ExpectError(OpenStatus(), StatusCode::kDataLoss, {path_, "'last'"});
}

// Issue 12: data_offsets that overlap, leave gaps or are shifted by one loaded garbage. They must
// tile the data section exactly, as the reference library requires ("invalid offset").
TEST_F(BadFileTest, OverlappingGappedOrShiftedOffsetsAreRejected) {
  const std::string data(8, 'x');
  // Overlap: both tensors read bytes [0, 4).
  WriteHeader(R"({"a": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]},
                  "b": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}})", data);
  ExpectError(OpenStatus(), StatusCode::kDataLoss, {path_, "data_offsets"});
  // Gap: bytes [4, 5) belong to nobody.
  WriteHeader(R"({"a": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]},
                  "b": {"dtype": "U8", "shape": [3], "data_offsets": [5, 8]}})", data);
  ExpectError(OpenStatus(), StatusCode::kDataLoss, {path_, "'b'", "gap"});
  // Shifted by one: starts at 1, so byte 0 is unused and the section is not covered.
  WriteHeader(R"({"a": {"dtype": "F32", "shape": [1], "data_offsets": [1, 5]}})", std::string(5, 'x'));
  ExpectError(OpenStatus(), StatusCode::kDataLoss, {path_, "'a'"});
  // Trailing bytes after the last tensor.
  WriteHeader(R"({"a": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}})", std::string(6, 'x'));
  ExpectError(OpenStatus(), StatusCode::kDataLoss, {path_, "4 of the 6 bytes"});
  // Out of order in the header but contiguous once sorted is fine (the format does not require
  // header order), as are zero-sized tensors.
  WriteHeader(R"({"b": {"dtype": "F32", "shape": [1], "data_offsets": [4, 8]},
                  "a": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]},
                  "e": {"dtype": "F32", "shape": [0], "data_offsets": [8, 8]}})", data);
  EXPECT_TRUE(SafetensorsFile::Open(path_).ok());
}

// Issue 12 (UBSan): a header of odd length puts the data at an odd offset; typed reads of a view
// there were misaligned. Get() returns an aligned copy with the same bytes.
TEST_F(BadFileTest, MisalignedDataIsReadThroughAnAlignedCopy) {
  const std::string header = R"({"w": {"dtype": "BF16", "shape": [3], "data_offsets": [0, 6]}} )";
  ASSERT_EQ((8 + header.size()) % 2, 1u) << "the test needs an odd data offset";
  const std::string data("\x80\x3f\x00\x40\x40\x40", 6);  // bf16 1.0, 2.0, 3.0
  WriteHeader(header, data);
  auto file = SafetensorsFile::Open(path_);
  ASSERT_TRUE(file.ok()) << file.status().ToString();
  auto t = (*file)->Get("w");
  ASSERT_TRUE(t.ok());
  EXPECT_EQ(reinterpret_cast<uintptr_t>(t->raw()) % 2, 0u);
  EXPECT_EQ(Bytes(*t), data);
  const Tensor f = t->ToFloat32();
  EXPECT_EQ(f.data<float>()[0], 1.0f);
  EXPECT_EQ(f.data<float>()[2], 3.0f);
}

// Issue 12: shard names from the index were joined unchecked, so "../x" or "/etc/passwd" made
// the readers open (and export overwrite) files outside the model directory.
TEST(SafetensorsCheckpointTest, ShardNamesMustBePlainFileNames) {
  const std::string dir = MakeTempDir();
  ASSERT_TRUE(WriteSafetensors(JoinPath(dir, "model-1.safetensors"), {{"w", Patterned(DType::kF32, {1}, 1)}}).ok());
  // A control character (found by the shard-index fuzzer: a newline made a two-line error) is no
  // plain file name either.
  for (const std::string bad : {"../model-1.safetensors", "/etc/passwd", "sub/model-1.safetensors", "..", "",
                                "model-1.safet\\nsors", "model-1\\u0001.safetensors"}) {
    SCOPED_TRACE(bad);
    WriteBytes(JoinPath(dir, "model.safetensors.index.json"),
               R"({"weight_map": {"w": ")" + bad + R"("}})");
    ExpectError(SafetensorsCheckpoint::Open(dir).status(), StatusCode::kDataLoss,
                {"model.safetensors.index.json", "'w'", "plain file name"});
  }
}

TEST_F(BadFileTest, MissingTensorIsNotFound) {
  ASSERT_TRUE(WriteSafetensors(path_, {{"present", Patterned(DType::kF32, {1}, 1)}}).ok());
  auto file = SafetensorsFile::Open(path_);
  ASSERT_TRUE(file.ok());
  EXPECT_FALSE((*file)->Has("absent.weight"));
  ExpectError((*file)->Get("absent.weight").status(), StatusCode::kNotFound, {path_, "absent.weight"});
}

}  // namespace
}  // namespace indexcache
