// Fp8DequantCpu (the CPU reference, also what the CPU backend's load uses) on hand-checked values
// and partial blocks, and Fp8BlockLayoutOf's validation of the weight and scale shapes.
#include "kernels/fp8_dequant.h"

#include <cmath>
#include <cstdint>
#include <random>
#include <vector>

#include "core/dtype.h"
#include "gtest/gtest.h"

namespace indexcache {
namespace {

// A 3 x 5 matrix in blocks of 2 x 2: the scale grid is 2 x 3, the last block row has one row and
// the last block column one column.
TEST(Fp8DequantCpuTest, HandCheckedPartialBlocks) {
  const Fp8BlockLayout layout{3, 5, 2, 2};
  EXPECT_EQ(layout.scale_rows(), 2);
  EXPECT_EQ(layout.scale_cols(), 3);
  const uint8_t one = FloatToFp8E4M3(1.0f), minus_half = FloatToFp8E4M3(-0.5f), big = FloatToFp8E4M3(448.0f);
  std::vector<uint8_t> q(15, one);
  q[2 * 5 + 4] = minus_half;  // (2, 4): block (1, 2)
  q[1 * 5 + 2] = big;         // (1, 2): block (0, 1)
  const std::vector<float> scale = {1, 2, 3, 4, 5, 6};
  std::vector<float> out(15);
  Fp8DequantCpu(q.data(), scale.data(), layout, out.data());
  const float want[3][5] = {{1, 1, 2, 2, 3}, {1, 1, 896, 2, 3}, {4, 4, 5, 5, -3}};
  for (int r = 0; r < 3; ++r) {
    for (int c = 0; c < 5; ++c) EXPECT_EQ(out[r * 5 + c], want[r][c]) << "(" << r << ", " << c << ")";
  }
}

// Odd shapes against the definition, element by element: the value is exactly
// Fp8E4M3ToFloat(q) * scale (one fp32 multiplication), for every code except NaN.
TEST(Fp8DequantCpuTest, MatchesDefinitionOnOddShapes) {
  struct Case { int64_t rows, cols, br, bc; };
  for (const Case& k : {Case{1, 1, 128, 128}, Case{200, 300, 128, 128}, Case{130, 272, 128, 128},
                        Case{96, 64, 16, 24}, Case{129, 257, 128, 128}}) {
    const Fp8BlockLayout layout{k.rows, k.cols, k.br, k.bc};
    std::mt19937 rng(static_cast<uint32_t>(k.rows * 1000 + k.cols));
    std::vector<uint8_t> q(layout.numel());
    for (uint8_t& b : q) {
      do b = static_cast<uint8_t>(rng() & 0xff); while ((b & 0x7f) == 0x7f);
    }
    std::vector<float> scale(layout.scale_rows() * layout.scale_cols());
    std::uniform_real_distribution<float> u(1e-4f, 1e-2f);
    for (float& s : scale) s = u(rng);
    std::vector<float> out(layout.numel());
    Fp8DequantCpu(q.data(), scale.data(), layout, out.data());
    int64_t bad = 0;
    for (int64_t r = 0; r < k.rows; ++r) {
      for (int64_t c = 0; c < k.cols; ++c) {
        const float want = Fp8E4M3ToFloat(q[r * k.cols + c]) * scale[(r / k.br) * layout.scale_cols() + c / k.bc];
        bad += out[r * k.cols + c] != want;
      }
    }
    EXPECT_EQ(bad, 0) << k.rows << " x " << k.cols << " in blocks of " << k.br << " x " << k.bc;
  }
}

TEST(Fp8BlockLayoutTest, AcceptsPartialBlocks) {
  auto layout = Fp8BlockLayoutOf("w", {7168, 2050}, {56, 17}, 128, 128);
  ASSERT_TRUE(layout.ok()) << layout.status().ToString();
  EXPECT_EQ(layout->rows, 7168);
  EXPECT_EQ(layout->cols, 2050);
  EXPECT_EQ(layout->scale_cols(), 17);
}

TEST(Fp8BlockLayoutTest, ErrorsNameTheTensor) {
  const std::string name = "model.layers.3.mlp.down_proj.weight";
  auto wrong_scale = Fp8BlockLayoutOf(name, {7168, 2048}, {56, 17}, 128, 128);
  ASSERT_FALSE(wrong_scale.ok());
  EXPECT_NE(wrong_scale.status().message().find(name), std::string::npos) << wrong_scale.status().message();
  EXPECT_NE(wrong_scale.status().message().find("[56, 16]"), std::string::npos) << wrong_scale.status().message();
  auto vector = Fp8BlockLayoutOf(name, {7168}, {56}, 128, 128);
  ASSERT_FALSE(vector.ok());
  EXPECT_NE(vector.status().message().find(name), std::string::npos);
  auto empty = Fp8BlockLayoutOf(name, {0, 128}, {0, 1}, 128, 128);
  EXPECT_FALSE(empty.ok());
  auto zero_block = Fp8BlockLayoutOf(name, {128, 128}, {1, 1}, 0, 128);
  ASSERT_FALSE(zero_block.ok());
  EXPECT_NE(zero_block.status().message().find("block size"), std::string::npos);
  // Exactly one line.
  EXPECT_EQ(wrong_scale.status().message().find('\n'), std::string::npos);
}

}  // namespace
}  // namespace indexcache
