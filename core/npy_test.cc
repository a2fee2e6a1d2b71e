// Tests for core/npy: round trips, files laid out by hand as NumPy writes them (formats 1.0 and
// 2.0), and errors for inputs we do not support or that are damaged.
#include "core/npy.h"

#include <stdlib.h>

#include <cstring>
#include <fstream>
#include <iterator>
#include <sstream>
#include <string>
#include <vector>

#include "core/file_util.h"
#include "gtest/gtest.h"
#include "core/test_util.h"

namespace indexcache {
namespace {

template <typename T>
std::string RawBytes(const std::vector<T>& values) {
  return std::string(reinterpret_cast<const char*>(values.data()), values.size() * sizeof(T));
}

// A .npy file as NumPy lays it out: magic, version, little-endian header length (2 bytes for
// 1.0, 4 bytes for 2.0), the dict padded with spaces and ending in '\n' so that the data starts
// at a multiple of 64, then the data.
std::string NpyFile(int major, const std::string& dict, const std::string& data) {
  const size_t prefix = major == 1 ? 10 : 12;
  std::string header = dict;
  while ((prefix + header.size() + 1) % 64 != 0) header.push_back(' ');
  header.push_back('\n');
  std::string out = "\x93NUMPY";
  out.push_back(static_cast<char>(major));
  out.push_back(0);
  const int len_bytes = major == 1 ? 2 : 4;
  for (int i = 0; i < len_bytes; ++i) out.push_back(static_cast<char>((header.size() >> (8 * i)) & 0xff));
  return out + header + data;
}

void ExpectError(const Status& status, const std::string& path) {
  ASSERT_FALSE(status.ok());
  EXPECT_NE(status.message().find(path), std::string::npos) << status.ToString();
}

// Fills a tensor with distinct values, negative ones included, of its own type.
template <typename T>
void FillDistinct(Tensor& t) {
  T* p = t.data<T>();
  for (int64_t i = 0; i < t.numel(); ++i) p[i] = static_cast<T>(i * 3 - 7) / static_cast<T>(2);
}

std::string Bytes(const Tensor& t) {
  return std::string(static_cast<const char*>(t.raw()), static_cast<size_t>(t.nbytes()));
}

TEST(NpyTest, RoundTripEveryDtypeAndRank) {
  const std::string dir = MakeTempDir();
  const Shape shapes[] = {{}, {5}, {2, 3}, {2, 3, 4}, {0, 3}};
  // The shape as Python writes a tuple: "()", "(5,)", "(2, 3)".
  const char* shape_texts[] = {"()", "(5,)", "(2, 3)", "(2, 3, 4)", "(0, 3)"};
  const struct { DType dtype; const char* descr; } dtypes[] = {
      {DType::kF32, "<f4"}, {DType::kF64, "<f8"}, {DType::kI32, "<i4"}, {DType::kI64, "<i8"}};
  for (const auto& d : dtypes) {
    for (size_t s = 0; s < std::size(shapes); ++s) {
      SCOPED_TRACE(std::string(d.descr) + " " + ShapeToString(shapes[s]));
      Tensor t = Tensor::Zeros(d.dtype, shapes[s]);
      switch (d.dtype) {
        case DType::kF32: FillDistinct<float>(t); break;
        case DType::kF64: FillDistinct<double>(t); break;
        case DType::kI32: FillDistinct<int32_t>(t); break;
        default: FillDistinct<int64_t>(t); break;
      }
      const std::string path = JoinPath(dir, std::string("t") + d.descr[1] + d.descr[2] + "_" + std::to_string(s) + ".npy");
      ASSERT_TRUE(WriteNpy(path, t).ok());

      // What NumPy expects: version 1.0, header text with our dtype and shape, data at a
      // 64-byte boundary.
      const std::string bytes = ReadBytes(path);
      ASSERT_GE(bytes.size(), 10u);
      EXPECT_EQ(bytes.substr(0, 8), std::string("\x93NUMPY\x01\x00", 8));
      const size_t header_len = static_cast<uint8_t>(bytes[8]) | (static_cast<uint8_t>(bytes[9]) << 8);
      EXPECT_EQ((10 + header_len) % 64, 0u);
      const std::string header = bytes.substr(10, header_len);
      EXPECT_EQ(header.back(), '\n');
      EXPECT_NE(header.find(std::string("'descr': '") + d.descr + "'"), std::string::npos) << header;
      EXPECT_NE(header.find("'fortran_order': False"), std::string::npos) << header;
      EXPECT_NE(header.find(std::string("'shape': ") + shape_texts[s]), std::string::npos) << header;
      EXPECT_EQ(bytes.size(), 10 + header_len + t.nbytes());

      auto back = ReadNpy(path);
      ASSERT_TRUE(back.ok()) << back.status().ToString();
      EXPECT_EQ(back->dtype(), d.dtype);
      EXPECT_EQ(back->shape(), shapes[s]);
      EXPECT_EQ(Bytes(*back), Bytes(t));
    }
  }
}

TEST(NpyTest, ReadsHandWrittenVersion1File) {
  const std::string path = JoinPath(MakeTempDir(), "ids.npy");
  const std::vector<int64_t> values = {1, -2, int64_t{1} << 40};
  WriteBytes(path, NpyFile(1, "{'descr': '<i8', 'fortran_order': False, 'shape': (3,), }", RawBytes(values)));
  auto t = ReadNpy(path);
  ASSERT_TRUE(t.ok()) << t.status().ToString();
  EXPECT_EQ(t->dtype(), DType::kI64);
  EXPECT_EQ(t->shape(), Shape{3});
  EXPECT_EQ(std::vector<int64_t>(t->data<int64_t>(), t->data<int64_t>() + 3), values);
}

TEST(NpyTest, ReadsHandWrittenVersion2File) {
  // Version 2.0 differs only in a 4-byte header length (NumPy uses it for headers over 64 KiB).
  const std::string path = JoinPath(MakeTempDir(), "v2.npy");
  const std::vector<float> values = {0.5f, -1.0f, 3.0f, 1e-3f};
  WriteBytes(path, NpyFile(2, "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 2), }", RawBytes(values)));
  auto t = ReadNpy(path);
  ASSERT_TRUE(t.ok()) << t.status().ToString();
  EXPECT_EQ(t->dtype(), DType::kF32);
  EXPECT_EQ(t->shape(), (Shape{2, 2}));
  EXPECT_EQ(std::vector<float>(t->data<float>(), t->data<float>() + 4), values);
}

TEST(NpyTest, ReadsOtherKeyOrderAndScalar) {
  // Keys in another order, no trailing comma: the reader must not depend on NumPy's exact text.
  const std::string path = JoinPath(MakeTempDir(), "scalar.npy");
  const std::vector<double> values = {2.75};
  WriteBytes(path, NpyFile(1, "{'shape': (), 'fortran_order': False, 'descr': '<f8'}", RawBytes(values)));
  auto t = ReadNpy(path);
  ASSERT_TRUE(t.ok()) << t.status().ToString();
  EXPECT_EQ(t->dtype(), DType::kF64);
  EXPECT_EQ(t->dim(), 0);
  EXPECT_EQ(t->data<double>()[0], 2.75);
}

class NpyErrorTest : public ::testing::Test {
 protected:
  void SetUp() override { path_ = JoinPath(MakeTempDir(), "bad.npy"); }
  std::string path_;
};

TEST_F(NpyErrorTest, MissingFile) {
  auto t = ReadNpy(path_);
  ExpectError(t.status(), path_);
  EXPECT_EQ(t.status().code(), StatusCode::kNotFound);
}

TEST_F(NpyErrorTest, BadMagic) {
  std::string bytes = NpyFile(1, "{'descr': '<f4', 'fortran_order': False, 'shape': (1,), }", "abcd");
  bytes[5] = 'X';  // "\x93NUMPX"
  WriteBytes(path_, bytes);
  ExpectError(ReadNpy(path_).status(), path_);
  WriteBytes(path_, "PK\x03\x04");  // an .npz (zip) is not an .npy; also shorter than the prefix
  ExpectError(ReadNpy(path_).status(), path_);
  WriteBytes(path_, "");
  ExpectError(ReadNpy(path_).status(), path_);
}

TEST_F(NpyErrorTest, UnsupportedVersion) {
  std::string bytes = NpyFile(1, "{'descr': '<f4', 'fortran_order': False, 'shape': (1,), }", "abcd");
  bytes[6] = 9;
  WriteBytes(path_, bytes);
  ExpectError(ReadNpy(path_).status(), path_);
}

TEST_F(NpyErrorTest, UnsupportedDtypes) {
  // Half precision, big-endian float32, bool and a structured dtype are all refused.
  for (const std::string descr : {"<f2", ">f4", ">i8", "|b1", "|u1"}) {
    SCOPED_TRACE(descr);
    WriteBytes(path_, NpyFile(1, "{'descr': '" + descr + "', 'fortran_order': False, 'shape': (2,), }", std::string(16, '\0')));
    auto t = ReadNpy(path_);
    ExpectError(t.status(), path_);
    EXPECT_NE(t.status().message().find(descr), std::string::npos) << t.status().ToString();
  }
}

TEST_F(NpyErrorTest, FortranOrder) {
  WriteBytes(path_, NpyFile(1, "{'descr': '<f4', 'fortran_order': True, 'shape': (2, 2), }", std::string(16, '\0')));
  ExpectError(ReadNpy(path_).status(), path_);
}

TEST_F(NpyErrorTest, TruncatedData) {
  // Shape (10,) of float32 needs 40 bytes; 20 are there.
  WriteBytes(path_, NpyFile(1, "{'descr': '<f4', 'fortran_order': False, 'shape': (10,), }", std::string(20, '\0')));
  auto t = ReadNpy(path_);
  ExpectError(t.status(), path_);
  EXPECT_EQ(t.status().code(), StatusCode::kDataLoss);
  // A valid file cut short by one byte.
  Tensor ok = Tensor::Zeros(DType::kI64, {3});
  ASSERT_TRUE(WriteNpy(path_, ok).ok());
  std::string bytes = ReadBytes(path_);
  bytes.pop_back();
  WriteBytes(path_, bytes);
  ExpectError(ReadNpy(path_).status(), path_);
}

TEST_F(NpyErrorTest, HugeShapeIsAnErrorNotACrash) {
  // A corrupt shape must be checked against the file size before anything is allocated, and
  // dimensions too large for 64 bits must not throw or wrap.
  for (const std::string shape : {"(1000000000000000,)", "(4294967296, 4294967296)", "(99999999999999999999999,)"}) {
    SCOPED_TRACE(shape);
    WriteBytes(path_, NpyFile(1, "{'descr': '<f8', 'fortran_order': False, 'shape': " + shape + ", }", std::string(8, '\0')));
    ExpectError(ReadNpy(path_).status(), path_);
  }
}

TEST_F(NpyErrorTest, ZeroDimensionDoesNotHideAnOverflowingShape) {
  // Issue 12 (UBSan): (0, 999999, 922337203685403) has zero elements, but its strides overflow.
  WriteBytes(path_, NpyFile(1, "{'descr': '<f4', 'fortran_order': False, 'shape': (0, 999999, 922337203685403), }", ""));
  ExpectError(ReadNpy(path_).status(), path_);
  // A zero dimension with a sane rest is still fine.
  WriteBytes(path_, NpyFile(1, "{'descr': '<f4', 'fortran_order': False, 'shape': (0, 3), }", ""));
  auto t = ReadNpy(path_);
  ASSERT_TRUE(t.ok()) << t.status().ToString();
  EXPECT_EQ(t->numel(), 0);
}

// Found by fuzz/npy_fuzz.cc: a header value holding a newline made a two-line error.
TEST_F(NpyErrorTest, EchoedHeaderValuesStayOnOneLine) {
  WriteBytes(path_, NpyFile(1, "{'descr': '<\nf4', 'fortran_order': False, 'shape': (1,), }", "abcd"));
  auto t = ReadNpy(path_);
  ExpectError(t.status(), path_);
  EXPECT_EQ(t.status().message().find('\n'), std::string::npos) << t.status().ToString();
}

TEST_F(NpyErrorTest, FortranOrderMustBeExactlyFalse) {
  // Issue 12: "Falsey" used to pass a substring match.
  for (const std::string value : {"Falsey", "NotFalse", "false", "0"}) {
    SCOPED_TRACE(value);
    WriteBytes(path_, NpyFile(1, "{'descr': '<f4', 'fortran_order': " + value + ", 'shape': (1,), }", "abcd"));
    auto t = ReadNpy(path_);
    ExpectError(t.status(), path_);
    EXPECT_NE(t.status().message().find("fortran_order"), std::string::npos) << t.status().ToString();
  }
}

TEST_F(NpyErrorTest, HeaderPastEndAndMissingKeys) {
  std::string bytes = NpyFile(1, "{'descr': '<f4', 'fortran_order': False, 'shape': (1,), }", "abcd");
  bytes[9] = 0x7f;  // header length 0x7fxx, far past the end of the file
  WriteBytes(path_, bytes);
  ExpectError(ReadNpy(path_).status(), path_);
  WriteBytes(path_, NpyFile(1, "{'descr': '<f4', 'fortran_order': False, }", "abcd"));
  ExpectError(ReadNpy(path_).status(), path_);
  WriteBytes(path_, NpyFile(1, "{'descr': '<f4', 'fortran_order': False, 'shape': (x,), }", "abcd"));
  ExpectError(ReadNpy(path_).status(), path_);
}

TEST_F(NpyErrorTest, WriteRejectsUnsupportedDtype) {
  ExpectError(WriteNpy(path_, Tensor::Zeros(DType::kBF16, {2})), path_);
  ExpectError(WriteNpy(path_, Tensor()), path_);  // no storage
  EXPECT_FALSE(FileExists(path_));
}

}  // namespace
}  // namespace indexcache
