// The CUDA MoE dispatch (kernels/moe_dispatch_cuda.h) against the CPU reference
// (kernels/moe_dispatch.h): order, inverse and offsets equal element for element (CUB's radix
// sort is stable), the gather bitwise, the combine bitwise on the same bf16 values and bitwise
// equal across two runs. Odd shapes: T*k around block edges, E = 1 and 256 (some experts empty),
// columns that are and are not multiples of 8. Skips without a CUDA device.
#include "kernels/moe_dispatch_cuda.h"

#include <random>
#include <vector>

#include "core/cuda_check.h"
#include "core/device_buffer.h"
#include "core/dtype.h"
#include "gtest/gtest.h"
#include "kernels/moe_dispatch.h"

namespace indexcache {
namespace {

struct Shape {
  int64_t T, k, E, C;
};

TEST(MoeDispatchCudaTest, MatchesCpuBitwise) {
  if (!CudaDeviceAvailable()) GTEST_SKIP() << "no CUDA device";
  std::mt19937 rng(5);
  std::normal_distribution<float> dist;
  for (const Shape s : {Shape{1, 1, 1, 7}, Shape{33, 8, 256, 64}, Shape{257, 8, 256, 72}, Shape{1001, 6, 72, 13},
                        Shape{5, 3, 4, 8}}) {
    const int64_t n = s.T * s.k;
    std::vector<int32_t> experts(n);
    // A skewed load: half the assignments go to a few experts, so some experts have many rows
    // (several radix-sort tiles) and others none.
    for (int32_t& e : experts) e = static_cast<int32_t>(rng() % 2 ? rng() % s.E : rng() % std::min<int64_t>(3, s.E));
    std::vector<int32_t> order(n), inverse(n), offsets(s.E + 1);
    MoeGroupByExpertCpu(experts.data(), n, s.E, order.data(), inverse.data(), offsets.data());

    DeviceBuffer<int32_t> d_experts(n), d_order(n), d_inverse(n), d_offsets(s.E + 1);
    d_experts.CopyFrom(experts);
    const size_t ws_bytes = MoeGroupByExpertCudaWorkspaceBytes(n, s.E);
    DeviceBuffer<char> ws(ws_bytes);
    MoeGroupByExpertCuda(d_experts.ptr, n, s.E, d_order.ptr, d_inverse.ptr, d_offsets.ptr, ws.ptr, ws_bytes, nullptr);
    EXPECT_EQ(d_order.ToHost(), order) << "T " << s.T;
    EXPECT_EQ(d_inverse.ToHost(), inverse) << "T " << s.T;
    EXPECT_EQ(d_offsets.ToHost(), offsets) << "T " << s.T;

    // Gather: a copy, bitwise.
    std::vector<float> x(s.T * s.C), weights(n), rows(n * s.C), y(s.T * s.C);
    std::vector<uint16_t> x_bits(x.size()), rows_bits(rows.size()), y_bits(y.size());
    for (size_t i = 0; i < x.size(); ++i) x[i] = Bf16ToFloat(x_bits[i] = FloatToBf16(dist(rng)));
    for (float& w : weights) w = dist(rng);
    std::vector<float> gathered(n * s.C);
    MoeGatherCpu(x.data(), order.data(), n, s.k, s.C, gathered.data());
    DeviceBuffer<uint16_t> d_x(x.size()), d_rows(rows.size()), d_y(y.size());
    d_x.CopyFrom(x_bits);
    MoeGatherCuda(reinterpret_cast<const __nv_bfloat16*>(d_x.ptr), d_order.ptr, n, s.k, s.C,
                  reinterpret_cast<__nv_bfloat16*>(d_rows.ptr), nullptr);
    const std::vector<uint16_t> got_gather = d_rows.ToHost();
    for (size_t i = 0; i < gathered.size(); ++i) ASSERT_EQ(Bf16ToFloat(got_gather[i]), gathered[i]) << i;

    // Combine over fresh expert outputs, onto a non-zero y.
    for (size_t i = 0; i < rows.size(); ++i) rows[i] = Bf16ToFloat(rows_bits[i] = FloatToBf16(dist(rng)));
    for (size_t i = 0; i < y.size(); ++i) y[i] = Bf16ToFloat(y_bits[i] = FloatToBf16(dist(rng)));
    DeviceBuffer<float> d_w(n);
    d_w.CopyFrom(weights);
    d_rows.CopyFrom(rows_bits);
    std::vector<float> want = y;
    MoeCombineCpu(rows.data(), inverse.data(), weights.data(), s.T, s.k, s.C, want.data());
    std::vector<uint16_t> first;
    for (int run = 0; run < 2; ++run) {
      d_y.CopyFrom(y_bits);
      MoeCombineCuda(reinterpret_cast<const __nv_bfloat16*>(d_rows.ptr), d_inverse.ptr, d_w.ptr, s.T, s.k, s.C,
                     reinterpret_cast<__nv_bfloat16*>(d_y.ptr), nullptr);
      const std::vector<uint16_t> got = d_y.ToHost();
      if (run == 0) {
        first = got;
        int bad = 0;
        for (size_t i = 0; i < got.size() && bad < 5; ++i) {
          if (got[i] != FloatToBf16(want[i])) {
            ADD_FAILURE() << "combine T " << s.T << " element " << i << ": " << Bf16ToFloat(got[i]) << " vs "
                          << want[i];
            ++bad;
          }
        }
      } else {
        EXPECT_EQ(got, first) << "combine not reproducible";
      }
    }
  }
}

}  // namespace
}  // namespace indexcache
