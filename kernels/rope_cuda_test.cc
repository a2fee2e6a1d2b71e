// RopeCuda (kernels/rope_cuda.h) against the CPU reference (ApplyRopeInterleavedCpu /
// ApplyRopeHalfSplitCpu, kernels/rope.h) on odd shapes: both layouts, fp32 and bf16, one pair up to
// many heads, head strides wider than the rope dims with the rotated dims at an offset (the q / k
// rows of MLA and the indexer), row strides with padding, default and yarn tables. Every element
// outside the rotated dims must come back untouched. bf16 gets the reference on the same
// bf16-rounded inputs. Skips without a CUDA device (CI has none).
#include "kernels/rope_cuda.h"

#include <cstdint>
#include <random>
#include <string>
#include <vector>

#include "core/cuda_check.h"
#include "core/device_buffer.h"
#include "core/dtype.h"
#include "core/test_util.h"
#include "gtest/gtest.h"
#include "kernels/rope.h"
#include "kernels/rope_config.h"
#include "kernels/tolerances.h"

namespace indexcache {
namespace {

std::vector<float> Random(int64_t n, uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> normal(0.f, 1.f);
  std::vector<float> v(n);
  for (float& x : v) x = normal(rng);
  return v;
}

// Rounds v to bf16 in place and returns the bits; the floats are then the exact bf16 values.
std::vector<uint16_t> ToBf16(std::vector<float>* v) {
  std::vector<uint16_t> bits(v->size());
  for (size_t i = 0; i < v->size(); ++i) (*v)[i] = Bf16ToFloat(bits[i] = FloatToBf16((*v)[i]));
  return bits;
}

std::vector<float> FromBf16(const std::vector<uint16_t>& bits) {
  std::vector<float> v(bits.size());
  for (size_t i = 0; i < bits.size(); ++i) v[i] = Bf16ToFloat(bits[i]);
  return v;
}

template <typename T>
DeviceBuffer<T> Upload(const std::vector<T>& v) {
  DeviceBuffer<T> d(v.size());
  d.CopyFrom(v);
  return d;
}

template <typename T>
std::vector<T> Download(const DeviceBuffer<T>& d) {
  CUDA_CHECK(cudaDeviceSynchronize());
  return d.ToHost();
}

__nv_bfloat16* B(const DeviceBuffer<uint16_t>& d) { return reinterpret_cast<__nv_bfloat16*>(d.ptr); }

struct Case {
  int64_t T, heads, half, head_stride, offset, row_pad;
  bool yarn;
};

std::string Name(const Case& c, bool interleaved) {
  return "T=" + std::to_string(c.T) + " heads=" + std::to_string(c.heads) + " half=" + std::to_string(c.half) +
         " head_stride=" + std::to_string(c.head_stride) + " offset=" + std::to_string(c.offset) +
         " row_pad=" + std::to_string(c.row_pad) + (c.yarn ? " yarn" : "") +
         (interleaved ? " interleaved" : " half-split");
}

RopeTable TableFor(const Case& c) {
  RopeConfig config;
  if (c.yarn) {  // the DeepSeek-V3.2 yarn parameters
    config.type = RopeType::kYarn;
    config.factor = 40.0;
    config.beta_fast = 32.0;
    config.beta_slow = 1.0;
    config.mscale = 1.0;
    config.mscale_all_dim = 1.0;
    config.original_max_position_embeddings = 4096;
  }
  return BuildRopeTable(config, 2 * c.half, /*first_position=*/11 + 1000 * c.yarn, c.T);
}

// One pair per row, a partial warp, around one block (256 threads), the MLA q rows (64 rope dims at
// offset 128 of 192, 128 heads), the indexer's k row (one head, 64 rope dims first), heads wider
// than the grid-stride step, odd strides and offsets, rows with padding.
const Case kCases[] = {
    {1, 1, 1, 2, 0, 0, false},      {3, 1, 1, 5, 3, 1, false},       {37, 3, 16, 70, 6, 5, false},
    {129, 5, 32, 64, 0, 0, false},  {7, 129, 8, 19, 3, 7, false},    {17, 128, 32, 192, 128, 0, true},
    {33, 1, 32, 128, 0, 0, true},   {257, 2, 7, 15, 1, 3, false},    {5, 64, 32, 128, 64, 11, true},
    {1000, 1, 4, 8, 0, 0, false},
};

TEST(RopeCudaTest, BothLayoutsFp32MatchCpuAndLeaveTheRestUntouched) {
  if (!CudaDeviceAvailable()) GTEST_SKIP() << "no CUDA device";
  for (const Case& c : kCases) {
    const int64_t row_stride = c.heads * c.head_stride + c.row_pad, n = c.T * row_stride;
    const RopeTable table = TableFor(c);
    const auto dcos = Upload(table.cos), dsin = Upload(table.sin);
    for (bool interleaved : {true, false}) {
      SCOPED_TRACE(Name(c, interleaved));
      const std::vector<float> x = Random(n, static_cast<uint32_t>(60 + c.T + c.half + interleaved));
      std::vector<float> want = x;
      (interleaved ? ApplyRopeInterleavedCpu : ApplyRopeHalfSplitCpu)(table, want.data() + c.offset, c.T, c.heads,
                                                                      row_stride, c.head_stride);
      auto dx = Upload(x);
      RopeCuda(dcos.ptr, dsin.ptr, c.T, c.half, interleaved, c.heads, row_stride, c.head_stride, c.offset, dx.ptr,
               nullptr);
      const std::vector<float> got = Download(dx);
      EXPECT_LE(RelL2(got, want), kRelL2TolF32);
      std::vector<bool> rotated(n, false);
      for (int64_t t = 0; t < c.T; ++t) {
        for (int64_t h = 0; h < c.heads; ++h) {
          for (int64_t d = 0; d < 2 * c.half; ++d) rotated[t * row_stride + h * c.head_stride + c.offset + d] = true;
        }
      }
      for (int64_t i = 0; i < n; ++i) {
        if (!rotated[i]) ASSERT_EQ(got[i], x[i]) << "element " << i << " is outside the rope dims";
      }
    }
  }
}

TEST(RopeCudaTest, BothLayoutsBf16MatchCpu) {
  if (!CudaDeviceAvailable()) GTEST_SKIP() << "no CUDA device";
  for (const Case& c : kCases) {
    const int64_t row_stride = c.heads * c.head_stride + c.row_pad, n = c.T * row_stride;
    const RopeTable table = TableFor(c);
    const auto dcos = Upload(table.cos), dsin = Upload(table.sin);
    for (bool interleaved : {true, false}) {
      SCOPED_TRACE(Name(c, interleaved));
      std::vector<float> x = Random(n, static_cast<uint32_t>(90 + c.T + c.half + interleaved));
      const std::vector<uint16_t> bits = ToBf16(&x);
      std::vector<float> want = x;
      (interleaved ? ApplyRopeInterleavedCpu : ApplyRopeHalfSplitCpu)(table, want.data() + c.offset, c.T, c.heads,
                                                                      row_stride, c.head_stride);
      auto dx = Upload(bits);
      RopeCuda(dcos.ptr, dsin.ptr, c.T, c.half, interleaved, c.heads, row_stride, c.head_stride, c.offset, B(dx),
               nullptr);
      const std::vector<uint16_t> got_bits = Download(dx);
      EXPECT_LE(RelL2(FromBf16(got_bits), want), kRelL2TolBf16);
      // Outside the rotated dims: the same bits.
      for (int64_t t = 0; t < c.T; ++t) {
        for (int64_t i = 0; i < row_stride; ++i) {
          const int64_t in_head = i % c.head_stride, h = i / c.head_stride;
          const bool rotated = h < c.heads && in_head >= c.offset && in_head < c.offset + 2 * c.half;
          if (!rotated) ASSERT_EQ(got_bits[t * row_stride + i], bits[t * row_stride + i]) << "row " << t << " col " << i;
        }
      }
    }
  }
}

}  // namespace
}  // namespace indexcache
