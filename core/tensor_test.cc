// Tests for core/tensor: sizes are overflow-checked everywhere a shape becomes a byte count or
// strides, and too-large allocations throw AllocationError (turned into one error line by the
// command front end) instead of aborting or wrapping to a small buffer.
#include "core/tensor.h"

#include <limits>

#include "gtest/gtest.h"

namespace indexcache {
namespace {

TEST(TensorSizeTest, CheckedNumElements) {
  EXPECT_EQ(*CheckedNumElements({}), 1);
  EXPECT_EQ(*CheckedNumElements({2, 3, 4}), 24);
  EXPECT_EQ(*CheckedNumElements({0, 5}), 0);
  EXPECT_FALSE(CheckedNumElements({-1, 4}).ok());
  // Issue 12: index_topk 2^62 times a few rows wrapped to a 64-byte buffer.
  EXPECT_FALSE(CheckedNumElements({16, int64_t{1} << 62}).ok());
  const int64_t big = std::numeric_limits<int64_t>::max();
  EXPECT_FALSE(CheckedNumElements({big, big}).ok());
  // A zero dimension does not excuse the others: the strides would still overflow.
  EXPECT_FALSE(CheckedNumElements({0, 999999, 922337203685403}).ok());
}

TEST(TensorSizeTest, CheckedNumBytesBoundsTheTotal) {
  EXPECT_EQ(*CheckedNumBytes(DType::kF32, {2, 3}), 24);
  // 2^61 elements fit the element count but not the byte limit.
  auto s = CheckedNumBytes(DType::kF32, {int64_t{1} << 61});
  ASSERT_FALSE(s.ok());
  EXPECT_NE(s.status().message().find("[2305843009213693952]"), std::string::npos) << s.status().ToString();
}

TEST(TensorSizeTest, ZerosThrowsAllocationErrorInsteadOfOverflowing) {
  EXPECT_THROW(Tensor::Zeros(DType::kI32, {16, int64_t{1} << 62}), AllocationError);
  EXPECT_THROW(Tensor::Zeros(DType::kF32, {int64_t{1} << 40, int64_t{1} << 20}), AllocationError);
  EXPECT_THROW(Tensor::Zeros(DType::kF32, {-3}), AllocationError);
  try {
    Tensor::Zeros(DType::kF32, {int64_t{1} << 40, int64_t{1} << 20});
  } catch (const AllocationError& e) {
    EXPECT_NE(std::string(e.what()).find("[1099511627776, 1048576]"), std::string::npos) << e.what();
  }
  const Tensor ok = Tensor::Zeros(DType::kF32, {0, 7});
  EXPECT_EQ(ok.numel(), 0);
}

TEST(TensorSizeTest, ContiguousStridesThrowOnOverflow) {
  EXPECT_EQ(ContiguousStrides({2, 3, 4}), (std::vector<int64_t>{12, 4, 1}));
  EXPECT_THROW(ContiguousStrides({0, 999999, 922337203685403}), AllocationError);
  EXPECT_THROW(NumElements({int64_t{1} << 40, int64_t{1} << 40}), AllocationError);
}

}  // namespace
}  // namespace indexcache
