// The batched decode step's two small operations: the CPU references (run in CI) and the CUDA
// kernels against them (skip without a CUDA device).
#include <cstdint>
#include <numeric>
#include <random>
#include <vector>

#include "core/cuda_check.h"
#include "core/device_buffer.h"
#include "gtest/gtest.h"
#include "kernels/batched_decode.h"
#include "kernels/batched_decode_cuda.h"

namespace indexcache {
namespace {

TEST(BatchedDecodeKernelsTest, OffsetIndicesKeepsPadding) {
  std::vector<int32_t> idx = {0, 3, -1, 2, -1, -1, 5, 0, 1};
  const std::vector<int32_t> off = {10, 100, 1000};
  OffsetIndicesCpu(off.data(), 3, 3, idx.data());
  EXPECT_EQ(idx, (std::vector<int32_t>{10, 13, -1, 102, -1, -1, 1005, 1000, 1001}));
}

TEST(BatchedDecodeKernelsTest, ScatterRowsWritesOnlyTheNamedRows) {
  std::vector<uint16_t> dst(6 * 3, 7), src = {1, 2, 3, 4, 5, 6};
  const std::vector<int32_t> rows = {4, 1};
  ScatterRowsCpu(src.data(), rows.data(), 2, 3 * sizeof(uint16_t), dst.data());
  for (int r = 0; r < 6; ++r) {
    for (int c = 0; c < 3; ++c) {
      const uint16_t want = r == 4 ? src[c] : r == 1 ? src[3 + c] : 7;
      EXPECT_EQ(dst[r * 3 + c], want) << r << "," << c;
    }
  }
}

TEST(BatchedDecodeKernelsTest, CudaMatchesCpu) {
  if (!CudaDeviceAvailable()) GTEST_SKIP() << "no CUDA device";
  std::mt19937 rng(3);
  // Offsets: T rows of k indices with -1 padding, sizes around a block.
  for (int64_t T : {1, 7, 64, 300}) {
    for (int64_t k : {1, 5, 2048}) {
      std::vector<int32_t> idx(T * k), off(T);
      std::uniform_int_distribution<int32_t> pick(-1, 1000);
      for (auto& v : idx) v = pick(rng) < 100 ? -1 : pick(rng);
      for (auto& v : off) v = pick(rng) * 1000 + 1000;
      std::vector<int32_t> want = idx;
      OffsetIndicesCpu(off.data(), T, k, want.data());
      DeviceBuffer<int32_t> d_idx(idx.size()), d_off(off.size());
      d_idx.CopyFrom(idx);
      d_off.CopyFrom(off);
      OffsetIndicesCuda(d_off.ptr, T, k, d_idx.ptr, nullptr);
      EXPECT_EQ(d_idx.ToHost(), want) << T << " x " << k;
    }
  }
  // Scatter: 16-byte rows (wide path) and odd-sized rows (byte path).
  for (int64_t row_bytes : {1152, 256, 6, 1}) {
    const int64_t n = 37, pool = 1000;
    std::vector<uint8_t> src(n * row_bytes), dst(pool * row_bytes, 0xab);
    for (auto& v : src) v = static_cast<uint8_t>(rng());
    std::vector<int32_t> perm(pool);
    std::iota(perm.begin(), perm.end(), 0);
    std::shuffle(perm.begin(), perm.end(), rng);
    const std::vector<int32_t> rows(perm.begin(), perm.begin() + n);
    DeviceBuffer<uint8_t> d_src(src.size()), d_dst(dst.size());
    DeviceBuffer<int32_t> d_rows(rows.size());
    d_src.CopyFrom(src);
    d_dst.CopyFrom(dst);
    d_rows.CopyFrom(rows);
    ScatterRowsCpu(src.data(), rows.data(), n, row_bytes, dst.data());
    ScatterRowsCuda(d_src.ptr, d_rows.ptr, n, row_bytes, d_dst.ptr, nullptr);
    EXPECT_EQ(d_dst.ToHost(), dst) << row_bytes;
  }
}

}  // namespace
}  // namespace indexcache
