// Fp8DequantCuda against Fp8DequantCpu (rounded to bf16 with FloatToBf16): bitwise equal, on odd
// shapes that take both paths -- rows and columns not multiples of 128, partial edge blocks,
// block sizes that are not multiples of 16 (the scalar path), a misaligned output (the scalar
// path again) and DeepSeek-V3.2's kv_b / expert shapes (the vectorised path). Skips without a CUDA
// device (CI has none).
#include "kernels/fp8_dequant_cuda.h"

#include <cstdint>
#include <random>
#include <vector>

#include "core/cuda_check.h"
#include "core/device_buffer.h"
#include "core/dtype.h"
#include "gtest/gtest.h"
#include "kernels/fp8_dequant.h"

namespace indexcache {
namespace {

struct Case {
  int64_t rows, cols, block_rows, block_cols;
  int64_t out_offset = 0;  // elements; 1 misaligns the output and forces the scalar path
};

void PrintTo(const Case& c, std::ostream* os) {
  *os << c.rows << "x" << c.cols << "_blocks" << c.block_rows << "x" << c.block_cols << "_offset" << c.out_offset;
}

class Fp8DequantCudaTest : public ::testing::TestWithParam<Case> {};

TEST_P(Fp8DequantCudaTest, BitwiseEqualToCpuReference) {
  if (!CudaDeviceAvailable()) GTEST_SKIP() << "no CUDA device";
  const Case k = GetParam();
  auto layout = Fp8BlockLayoutOf("test", {k.rows, k.cols}, {(k.rows + k.block_rows - 1) / k.block_rows,
                                                            (k.cols + k.block_cols - 1) / k.block_cols},
                                 k.block_rows, k.block_cols);
  ASSERT_TRUE(layout.ok()) << layout.status().ToString();
  const int64_t n = layout->numel();
  std::mt19937 rng(static_cast<uint32_t>(k.rows * 7919 + k.cols));
  std::vector<uint8_t> q(n);
  for (uint8_t& b : q) {
    do b = static_cast<uint8_t>(rng() & 0xff); while ((b & 0x7f) == 0x7f);  // every code but NaN
  }
  std::vector<float> scale(layout->scale_rows() * layout->scale_cols());
  std::uniform_real_distribution<float> u(-1e-2f, 1e-2f);  // signed, so a wrong block shows
  for (float& s : scale) s = u(rng);
  std::vector<float> ref(n);
  Fp8DequantCpu(q.data(), scale.data(), *layout, ref.data());

  DeviceBuffer<uint8_t> dq(n);
  DeviceBuffer<float> ds(scale.size());
  DeviceBuffer<uint16_t> dout(n + k.out_offset);
  dq.CopyFrom(q.data());
  ds.CopyFrom(scale.data());
  CUDA_CHECK(cudaMemset(dout.ptr, 0xff, dout.bytes));
  Fp8DequantCuda(dq.ptr, ds.ptr, *layout, reinterpret_cast<__nv_bfloat16*>(dout.ptr + k.out_offset), nullptr);
  std::vector<uint16_t> got(n + k.out_offset);
  dout.CopyTo(got.data());

  int64_t mismatches = 0, first = -1;
  for (int64_t i = 0; i < n; ++i) {
    if (got[k.out_offset + i] != FloatToBf16(ref[i])) {
      if (first < 0) first = i;
      ++mismatches;
    }
  }
  EXPECT_EQ(mismatches, 0) << "first at row " << first / k.cols << " col " << first % k.cols << ": got 0x" << std::hex
                           << (first >= 0 ? got[k.out_offset + first] : 0) << " want 0x"
                           << (first >= 0 ? FloatToBf16(ref[first]) : 0);
  for (int64_t i = 0; i < k.out_offset; ++i) EXPECT_EQ(got[i], 0xffff) << "wrote before the output";
}

INSTANTIATE_TEST_SUITE_P(Shapes, Fp8DequantCudaTest,
                         ::testing::Values(Case{1, 1, 128, 128},        // one element
                                           Case{7, 300, 128, 128},      // cols % 16 != 0: scalar
                                           Case{130, 272, 128, 128},    // vectorised, partial blocks
                                           Case{200, 129, 128, 128},    // scalar, one-column edge block
                                           Case{257, 384, 128, 128},    // vectorised, one-row edge block
                                           Case{96, 64, 16, 24},        // the FP8 fixture's blocks: scalar
                                           Case{100, 96, 16, 32},       // vectorised, small blocks
                                           Case{130, 272, 128, 128, 1}, // misaligned output: scalar
                                           Case{32768, 512, 128, 128},  // V3.2 kv_b
                                           Case{7168, 2048, 128, 128}));  // V3.2 expert down_proj

}  // namespace
}  // namespace indexcache
