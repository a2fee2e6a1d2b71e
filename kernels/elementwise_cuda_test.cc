// Every kernel of kernels/elementwise_cuda.h against its CPU reference (kernels/elementwise.h,
// kernels/norms.h, kernels/rope.h) on odd shapes: embedding, SiLU-mul, add, scale, the dtype
// conversions, inference and training LayerNorm and its backward, the MLA latent, and the MoE row
// gather / scatter-add. bf16 kernels get the CPU reference on the same bf16-rounded inputs. (Rope:
// kernels/rope_cuda_test.cc.) Skips without a CUDA device (CI has none).
#include "kernels/elementwise_cuda.h"

#include <algorithm>
#include <cstdint>
#include <numeric>
#include <random>
#include <vector>

#include "core/cuda_check.h"
#include "core/device_buffer.h"
#include "core/dtype.h"
#include "core/test_util.h"
#include "gtest/gtest.h"
#include "kernels/elementwise.h"
#include "kernels/norms.h"
#include "kernels/rope.h"
#include "kernels/tolerances.h"

namespace indexcache {
namespace {

// Odd sizes: below one block, just around one block (256 threads), many blocks with a tail.
constexpr int64_t kSizes[] = {1, 7, 255, 257, 100003};

std::vector<float> Random(int64_t n, uint32_t seed, float stddev = 1.0f) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> normal(0.f, stddev);
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

// A device copy of bf16 bits, and the typed pointer the kernels take.
DeviceBuffer<uint16_t> Upload(const std::vector<uint16_t>& bits) {
  DeviceBuffer<uint16_t> d(bits.size());
  d.CopyFrom(bits);
  return d;
}
DeviceBuffer<float> Upload(const std::vector<float>& v) {
  DeviceBuffer<float> d(v.size());
  d.CopyFrom(v);
  return d;
}
DeviceBuffer<int32_t> Upload(const std::vector<int32_t>& v) {
  DeviceBuffer<int32_t> d(v.size());
  d.CopyFrom(v);
  return d;
}
bf16* B(const DeviceBuffer<uint16_t>& d) { return reinterpret_cast<bf16*>(d.ptr); }

std::vector<uint16_t> Download(const DeviceBuffer<uint16_t>& d) {
  CUDA_CHECK(cudaDeviceSynchronize());
  return d.ToHost();
}
std::vector<float> Download(const DeviceBuffer<float>& d) {
  CUDA_CHECK(cudaDeviceSynchronize());
  return d.ToHost();
}

TEST(ElementwiseCudaTest, EmbeddingCopiesRowsExactly) {
  if (!CudaDeviceAvailable()) GTEST_SKIP() << "no CUDA device";
  const int64_t V = 101, H = 129, T = 37;
  std::vector<float> table = Random(V * H, 1);
  const std::vector<uint16_t> table_bits = ToBf16(&table);
  std::vector<int32_t> tokens(T);
  std::mt19937 rng(2);
  for (int32_t& t : tokens) t = static_cast<int32_t>(rng() % V);
  tokens[0] = 0;
  tokens[T - 1] = V - 1;  // both ends of the table
  std::vector<float> want(T * H);
  EmbeddingCpu(table.data(), tokens.data(), T, H, want.data());

  const auto dtable = Upload(table_bits);
  const auto dtokens = Upload(tokens);
  DeviceBuffer<uint16_t> dout(T * H);
  EmbeddingCuda(B(dtable), dtokens.ptr, T, H, B(dout), nullptr);
  EXPECT_EQ(FromBf16(Download(dout)), want);
}

TEST(ElementwiseCudaTest, SiluMulAddAndScaleMatchCpu) {
  if (!CudaDeviceAvailable()) GTEST_SKIP() << "no CUDA device";
  for (int64_t n : kSizes) {
    SCOPED_TRACE("n=" + std::to_string(n));
    std::vector<float> gate = Random(n, 10 + n, 2.f), up = Random(n, 20 + n), y = Random(n, 30 + n);
    const auto gate_bits = ToBf16(&gate), up_bits = ToBf16(&up), y_bits = ToBf16(&y);
    const auto dgate = Upload(gate_bits), dup = Upload(up_bits);

    std::vector<float> silu(n);
    SiluMulCpu(gate.data(), up.data(), n, silu.data());
    DeviceBuffer<uint16_t> dsilu(n);
    SiluMulCuda(B(dgate), B(dup), n, B(dsilu), nullptr);
    EXPECT_LE(RelL2(FromBf16(Download(dsilu)), silu), kRelL2TolBf16) << "SiluMul";

    std::vector<float> sum = y;
    AddCpu(gate.data(), n, sum.data());
    auto dy = Upload(y_bits);
    AddCuda(B(dgate), n, B(dy), nullptr);
    EXPECT_LE(RelL2(FromBf16(Download(dy)), sum), kRelL2TolBf16) << "Add";

    // bf16 scale: one fp32 multiply, rounded once, on both sides.
    std::vector<float> scaled = up;
    ScaleCpu(scaled.data(), n, 0.3125f);
    ToBf16(&scaled);
    auto dscaled = Upload(up_bits);
    ScaleCuda(B(dscaled), n, 0.3125f, nullptr);
    EXPECT_EQ(FromBf16(Download(dscaled)), scaled) << "Scale bf16";

    // fp32 scale: one correctly rounded multiply on both sides.
    std::vector<float> x32 = Random(n, 40 + n), want32 = x32;
    ScaleCpu(want32.data(), n, -1.7f);
    auto dx32 = Upload(x32);
    ScaleCuda(dx32.ptr, n, -1.7f, nullptr);
    EXPECT_EQ(Download(dx32), want32) << "Scale fp32";
  }
}

TEST(ElementwiseCudaTest, ConversionsMatchCoreDtype) {
  if (!CudaDeviceAvailable()) GTEST_SKIP() << "no CUDA device";
  for (int64_t n : kSizes) {
    SCOPED_TRACE("n=" + std::to_string(n));
    // Values spread over many binades, plus ties and the extremes of bf16's range.
    std::vector<float> x = Random(n, 50 + n, 100.f);
    if (n >= 7) {
      x[0] = 0.f;
      x[1] = -0.f;
      x[2] = 1.00390625f;   // 1 + 2^-8: a tie, rounds to even (1.0)
      x[3] = 1.01171875f;   // 1 + 3 * 2^-8: a tie, rounds to even (1 + 2^-6)
      x[4] = 3.0e38f;
      x[5] = 1.0e-39f;      // subnormal
      x[6] = -65504.f;
    }
    std::vector<uint16_t> want_bits(n);
    for (int64_t i = 0; i < n; ++i) want_bits[i] = FloatToBf16(x[i]);
    const auto dx = Upload(x);
    DeviceBuffer<uint16_t> dbits(n);
    F32ToBf16Cuda(dx.ptr, n, B(dbits), nullptr);
    EXPECT_EQ(Download(dbits), want_bits) << "F32ToBf16";

    DeviceBuffer<float> dback(n);
    Bf16ToF32Cuda(B(dbits), n, dback.ptr, nullptr);
    EXPECT_EQ(Download(dback), FromBf16(want_bits)) << "Bf16ToF32";
  }
}

struct NormShape {
  int64_t rows, dim;
};
// One row, one partial warp, around one block (256 threads), the model's odd dims.
constexpr NormShape kNormShapes[] = {{1, 7}, {13, 129}, {37, 257}, {5, 7169}, {300, 64}};

TEST(ElementwiseCudaTest, LayerNormMatchesCpu) {
  if (!CudaDeviceAvailable()) GTEST_SKIP() << "no CUDA device";
  for (const NormShape& s : kNormShapes) {
    SCOPED_TRACE("rows=" + std::to_string(s.rows) + " dim=" + std::to_string(s.dim));
    // A mean far from 0, so a missing mean subtraction shows.
    std::vector<float> x = Random(s.rows * s.dim, 70 + s.dim, 2.f), w = Random(s.dim, 71), b = Random(s.dim, 72);
    for (float& v : x) v += 3.f;
    const auto xb = ToBf16(&x), wb = ToBf16(&w), bb = ToBf16(&b);
    std::vector<float> want(x.size());
    LayerNormCpu(x.data(), w.data(), b.data(), s.rows, s.dim, 1e-5f, want.data());
    const auto dx = Upload(xb), dw = Upload(wb), db = Upload(bb);
    DeviceBuffer<uint16_t> dy(x.size());
    LayerNormCuda(B(dx), B(dw), B(db), s.rows, s.dim, 1e-5f, B(dy), nullptr);
    EXPECT_LE(RelL2(FromBf16(Download(dy)), want), kRelL2TolBf16);
  }
}

TEST(ElementwiseCudaTest, LayerNormTrainAndBackwardMatchCpu) {
  if (!CudaDeviceAvailable()) GTEST_SKIP() << "no CUDA device";
  for (const NormShape& s : kNormShapes) {
    SCOPED_TRACE("rows=" + std::to_string(s.rows) + " dim=" + std::to_string(s.dim));
    const int64_t n = s.rows * s.dim;
    const std::vector<float> x = Random(n, 80 + s.dim, 1.5f), w = Random(s.dim, 81), b = Random(s.dim, 82);
    std::vector<float> y(n), xhat(n), inv(s.rows);
    LayerNormTrainCpu(x.data(), w.data(), b.data(), s.rows, s.dim, 1e-5f, y.data(), xhat.data(), inv.data());
    const auto dx = Upload(x), dw = Upload(w), db = Upload(b);
    DeviceBuffer<float> dyv(n), dxhat(n), dinv(s.rows);
    LayerNormTrainCuda(dx.ptr, dw.ptr, db.ptr, s.rows, s.dim, 1e-5f, dyv.ptr, dxhat.ptr, dinv.ptr, nullptr);
    EXPECT_LE(RelL2(Download(dyv), y), kRelL2TolF32) << "y";
    EXPECT_LE(RelL2(Download(dxhat), xhat), kRelL2TolF32) << "xhat";
    EXPECT_LE(RelL2(Download(dinv), inv), kRelL2TolF32) << "inv";

    // Backward from the CPU's own xhat and inv; dw and db accumulate onto non-zero buffers.
    const std::vector<float> dy = Random(n, 83 + s.dim), dw0 = Random(s.dim, 84), db0 = Random(s.dim, 85);
    std::vector<float> dxr(n), dwr = dw0, dbr = db0;
    LayerNormBackwardCpu(dy.data(), xhat.data(), inv.data(), w.data(), s.rows, s.dim, dxr.data(), dwr.data(),
                         dbr.data());
    const auto ddy = Upload(dy), dxh = Upload(xhat), dinv2 = Upload(inv);
    auto ddw = Upload(dw0), ddb = Upload(db0);
    DeviceBuffer<float> ddx(n);
    LayerNormBackwardCuda(ddy.ptr, dxh.ptr, dinv2.ptr, dw.ptr, s.rows, s.dim, ddx.ptr, ddw.ptr, ddb.ptr, nullptr);
    EXPECT_LE(RelL2(Download(ddx), dxr), 1e-4) << "dx";
    EXPECT_LE(RelL2OfChange(Download(ddw), dwr, dw0), 1e-4) << "dw";
    EXPECT_LE(RelL2OfChange(Download(ddb), dbr, db0), 1e-4) << "db";
  }
}

// latent[t] = [RmsNorm(ckv[t, :kv_lora]) * w, rope_interleaved(ckv[t, kv_lora:])], as the CPU
// backend composes it.
TEST(ElementwiseCudaTest, MlaLatentMatchesRmsNormAndRope) {
  if (!CudaDeviceAvailable()) GTEST_SKIP() << "no CUDA device";
  struct Case {
    int64_t T, kv_lora, half;
  };
  for (const Case& c : {Case{1, 7, 1}, Case{37, 129, 16}, Case{65, 512, 32}}) {
    SCOPED_TRACE("T=" + std::to_string(c.T) + " kv_lora=" + std::to_string(c.kv_lora));
    const int64_t width = c.kv_lora + 2 * c.half;
    std::vector<float> ckv = Random(c.T * width, 90 + c.kv_lora, 2.f), w = Random(c.kv_lora, 91);
    const auto ckv_bits = ToBf16(&ckv), w_bits = ToBf16(&w);
    const RopeTable table = BuildRopeTable(RopeConfig(), 2 * c.half, 0, c.T);
    std::vector<float> want = ckv;
    RmsNormCpu(ckv.data(), w.data(), c.T, c.kv_lora, 1e-6f, want.data(), width, width);
    ApplyRopeInterleavedCpu(table, want.data() + c.kv_lora, c.T, 1, width, 0);

    const auto dckv = Upload(ckv_bits), dw = Upload(w_bits);
    const auto dcos = Upload(table.cos), dsin = Upload(table.sin);
    DeviceBuffer<uint16_t> dlatent(c.T * width);
    MlaLatentCuda(B(dckv), B(dw), 1e-6f, dcos.ptr, dsin.ptr, c.T, c.kv_lora, c.half, B(dlatent), nullptr);
    EXPECT_LE(RelL2(FromBf16(Download(dlatent)), want), kRelL2TolBf16);
  }
}

TEST(ElementwiseCudaTest, GatherAndScatterAddRowsMatchCpu) {
  if (!CudaDeviceAvailable()) GTEST_SKIP() << "no CUDA device";
  const int64_t src_rows = 53;
  for (int64_t cols : {1, 7, 129, 7168}) {
    for (int64_t n : {1, 17, 53}) {
      SCOPED_TRACE("n=" + std::to_string(n) + " cols=" + std::to_string(cols));
      // n distinct rows in a random order (scatter-add requires distinct rows within a call).
      std::vector<int32_t> rows(src_rows);
      std::iota(rows.begin(), rows.end(), 0);
      std::shuffle(rows.begin(), rows.end(), std::mt19937(static_cast<uint32_t>(n * 31 + cols)));
      rows.resize(n);
      std::vector<float> x = Random(src_rows * cols, 100 + cols);
      const auto x_bits = ToBf16(&x);
      std::vector<float> gathered(n * cols);
      GatherRowsCpu(x.data(), rows.data(), n, cols, gathered.data());
      const auto dx = Upload(x_bits);
      const auto drows = Upload(rows);
      DeviceBuffer<uint16_t> dg(n * cols);
      GatherRowsCuda(B(dx), drows.ptr, n, cols, B(dg), nullptr);
      EXPECT_EQ(FromBf16(Download(dg)), gathered) << "GatherRows";

      std::vector<float> part = Random(n * cols, 110 + cols), y = Random(src_rows * cols, 120 + cols);
      const std::vector<float> scale = Random(n, 130 + n);
      const auto part_bits = ToBf16(&part), y_bits = ToBf16(&y);
      std::vector<float> want = y;
      ScatterAddRowsCpu(part.data(), rows.data(), scale.data(), n, cols, want.data());
      const auto dpart = Upload(part_bits);
      const auto dscale = Upload(scale);
      auto dy = Upload(y_bits);
      ScatterAddRowsCuda(B(dpart), drows.ptr, dscale.ptr, n, cols, B(dy), nullptr);
      EXPECT_LE(RelL2(FromBf16(Download(dy)), want), kRelL2TolBf16) << "ScatterAddRows";
    }
  }
}

}  // namespace
}  // namespace indexcache
