// DistillLossCuda against DistillLossCpu<float> on the same bf16-rounded inputs (fresh random
// data): odd shapes, dense and sparse (padding, duplicates, past-causal entries, an empty row),
// query_offset, several served layers, and the V3.2 head sizes. Gradient buffers start non-zero
// and the accumulated deltas are compared. Skips without a CUDA device (CI has none).
//
// Tolerances: loss within 1e-3 relative; each gradient within kRelL2TolBf16 relative L2 (the
// kernel rounds the ReLU-masked dI coefficients to bf16 for the tensor-core products).
#include "kernels/distill_loss_cuda.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <random>
#include <string>
#include <tuple>
#include <vector>

#include "core/cuda_check.h"
#include "core/device_buffer.h"
#include "core/dtype.h"
#include "core/test_util.h"
#include "gtest/gtest.h"
#include "kernels/distill_loss.h"
#include "kernels/tolerances.h"

namespace indexcache {
namespace {

struct Case {
  std::string name;
  int64_t Tq, L, HI, D, HA, DA, served, query_offset;
  bool sparse = false;
  int64_t K = 0;
  uint32_t seed = 1;
};

void PrintTo(const Case& c, std::ostream* os) { *os << c.name; }

std::vector<uint16_t> RoundToBf16(std::vector<float>* v) {
  std::vector<uint16_t> bits(v->size());
  for (size_t i = 0; i < v->size(); ++i) (*v)[i] = Bf16ToFloat(bits[i] = FloatToBf16((*v)[i]));
  return bits;
}

// A (teacher, student) implementation pair. Each case runs with the mma.sync and the wgmma teacher
// (the latter only on an sm_90 device) and with both students; kAuto resolves the student, which
// for shapes the warp-keys student does not take (wide_heads_d136) means the tiled one.
struct Path {
  DistillTeacherImpl teacher;
  DistillStudentImpl student;
  const char* name;
};

void PrintTo(const Path& path, std::ostream* os) { *os << path.name; }

class DistillLossCudaTest : public ::testing::TestWithParam<std::tuple<Case, Path>> {};

bool DeviceIsSm90() {
  int dev = 0, major = 0, minor = 0;
  CUDA_CHECK(cudaGetDevice(&dev));
  CUDA_CHECK(cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, dev));
  CUDA_CHECK(cudaDeviceGetAttribute(&minor, cudaDevAttrComputeCapabilityMinor, dev));
  return major == 9 && minor == 0;
}

TEST_P(DistillLossCudaTest, MatchesCpu) {
  if (!CudaDeviceAvailable()) GTEST_SKIP() << "no CUDA device";
  const Case c = std::get<0>(GetParam());
  const DistillTeacherImpl impl = std::get<1>(GetParam()).teacher;
  const DistillStudentImpl student = std::get<1>(GetParam()).student;
  if (impl == DistillTeacherImpl::kWgmma && !DeviceIsSm90()) GTEST_SKIP() << "the wgmma teacher needs sm_90";
  std::mt19937 rng(c.seed * 7919u + static_cast<uint32_t>(c.Tq * 31 + c.L));
  std::normal_distribution<float> normal(0.f, 1.f);
  std::uniform_real_distribution<float> uni(-1.f, 1.f);

  std::vector<float> q(c.Tq * c.HI * c.D), k(c.L * c.D), w(c.Tq * c.HI);
  for (float& v : q) v = normal(rng);
  for (float& v : k) v = normal(rng);
  for (float& v : w) v = 2.f * uni(rng) / std::sqrt(float(c.HI));
  std::vector<std::vector<float>> aq(c.served), akv(c.served);
  std::vector<std::vector<uint16_t>> aqb(c.served), akvb(c.served);
  for (int64_t j = 0; j < c.served; ++j) {
    aq[j].resize(c.Tq * c.HA * c.DA);
    akv[j].resize(c.L * c.DA);
    for (float& v : aq[j]) v = normal(rng);
    for (float& v : akv[j]) v = normal(rng);
    aqb[j] = RoundToBf16(&aq[j]);
    akvb[j] = RoundToBf16(&akv[j]);
  }
  const std::vector<uint16_t> qb = RoundToBf16(&q), kb = RoundToBf16(&k);
  std::vector<int32_t> topk;
  if (c.sparse) {
    std::uniform_int_distribution<int32_t> pick(0, static_cast<int32_t>(c.L - 1));
    topk.resize(c.Tq * c.K);
    for (int64_t t = 0; t < c.Tq; ++t) {
      const int64_t end = std::min(c.query_offset + t + 1, c.L);
      std::uniform_int_distribution<int32_t> causal(0, static_cast<int32_t>(std::max<int64_t>(end - 1, 0)));
      for (int64_t j = 0; j < c.K; ++j) {
        // Mostly causal keys, some past-causal (ignored), some padding, some duplicates.
        const uint32_t r = rng() % 16;
        int32_t v = r < 11 ? causal(rng) : (r < 13 ? pick(rng) : -1);
        if (r == 15 && j > 0) v = topk[t * c.K + j - 1];
        topk[t * c.K + j] = v;
      }
    }
    std::fill_n(topk.begin(), c.K, -1);  // query 0: empty key set
  }
  const float index_scale = 1.f / std::sqrt(float(c.D));
  const float attn_scale = 1.5f / std::sqrt(float(c.DA));

  // Gradient buffers start at small random values: the kernel must accumulate.
  std::vector<float> gq0(q.size()), gk0(k.size()), gw0(w.size());
  for (float& v : gq0) v = 1e-3f * uni(rng);
  for (float& v : gk0) v = 1e-3f * uni(rng);
  for (float& v : gw0) v = 1e-3f * uni(rng);
  const double loss0 = 0.25;

  DistillLossParams ref;
  ref.q = q.data();
  ref.k = k.data();
  ref.w = w.data();
  ref.Tq = c.Tq;
  ref.L = c.L;
  ref.HI = c.HI;
  ref.D = c.D;
  ref.index_scale = index_scale;
  ref.query_offset = c.query_offset;
  for (int64_t j = 0; j < c.served; ++j) {
    ref.attn_q.push_back(aq[j].data());
    ref.attn_kv.push_back(akv[j].data());
  }
  ref.HA = c.HA;
  ref.DA = c.DA;
  ref.attn_scale = attn_scale;
  ref.sparse = c.sparse;
  ref.topk = c.sparse ? topk.data() : nullptr;
  ref.K = c.K;
  double ref_loss = loss0;
  std::vector<float> ref_gq = gq0, ref_gk = gk0, ref_gw = gw0;
  ref.loss = &ref_loss;
  ref.grad_q = ref_gq.data();
  ref.grad_k = ref_gk.data();
  ref.grad_w = ref_gw.data();
  DistillLossCpu(ref);

  DeviceBuffer<uint16_t> dq(qb.size()), dk(kb.size());
  DeviceBuffer<float> dw(w.size()), dgq(q.size()), dgk(k.size()), dgw(w.size());
  DeviceBuffer<double> dloss(1);
  DeviceBuffer<int32_t> dtopk(topk.size());
  std::vector<DeviceBuffer<uint16_t>> daq, dakv;  // move-only: the device pointers survive growth
  dq.CopyFrom(qb.data());
  dk.CopyFrom(kb.data());
  dw.CopyFrom(w.data());
  dgq.CopyFrom(gq0.data());
  dgk.CopyFrom(gk0.data());
  dgw.CopyFrom(gw0.data());
  dloss.CopyFrom(&loss0);
  if (c.sparse) dtopk.CopyFrom(topk.data());

  DistillLossCudaParams p;
  p.q = reinterpret_cast<const __nv_bfloat16*>(dq.ptr);
  p.k = reinterpret_cast<const __nv_bfloat16*>(dk.ptr);
  p.w = dw.ptr;
  p.Tq = c.Tq;
  p.L = c.L;
  p.HI = c.HI;
  p.D = c.D;
  p.index_scale = index_scale;
  p.query_offset = c.query_offset;
  p.num_served = static_cast<int>(c.served);
  for (int64_t j = 0; j < c.served; ++j) {
    daq.emplace_back(aqb[j].size());
    dakv.emplace_back(akvb[j].size());
    daq[j].CopyFrom(aqb[j].data());
    dakv[j].CopyFrom(akvb[j].data());
    p.attn_q[j] = reinterpret_cast<const __nv_bfloat16*>(daq[j].ptr);
    p.attn_kv[j] = reinterpret_cast<const __nv_bfloat16*>(dakv[j].ptr);
  }
  p.HA = c.HA;
  p.DA = c.DA;
  p.attn_scale = attn_scale;
  p.sparse = c.sparse;
  p.topk = c.sparse ? dtopk.ptr : nullptr;
  p.K = c.K;
  p.teacher_impl = impl;
  p.student_impl = student;
  p.loss = dloss.ptr;
  p.grad_q = dgq.ptr;
  p.grad_k = dgk.ptr;
  p.grad_w = dgw.ptr;
  const size_t ws_bytes = DistillLossCudaWorkspaceBytes(p);
  DeviceBuffer<unsigned char> ws(ws_bytes);
  CUDA_CHECK(cudaMemset(ws.ptr, 0xff, ws.bytes));  // poison: the kernel must not rely on zeros
  p.workspace = ws.ptr;
  p.workspace_bytes = ws_bytes;
  DistillLossCuda(p);
  CUDA_CHECK(cudaDeviceSynchronize());

  double got_loss = 0;
  std::vector<float> got_gq(q.size()), got_gk(k.size()), got_gw(w.size());
  dloss.CopyTo(&got_loss);
  dgq.CopyTo(got_gq.data());
  dgk.CopyTo(got_gk.data());
  dgw.CopyTo(got_gw.data());

  const double want = ref_loss - loss0, got = got_loss - loss0;
  EXPECT_GT(want, 0.0);
  EXPECT_NEAR(got, want, 1e-3 * std::abs(want)) << "loss";
  const double eq = RelL2OfChange(got_gq, ref_gq, gq0), ek = RelL2OfChange(got_gk, ref_gk, gk0),
               ew = RelL2OfChange(got_gw, ref_gw, gw0);
  EXPECT_LT(eq, kRelL2TolBf16) << "grad_q";
  EXPECT_LT(ek, kRelL2TolBf16) << "grad_k";
  EXPECT_LT(ew, kRelL2TolBf16) << "grad_w";
  std::printf("[%s %s] loss %.6f vs %.6f (rel %.2e); rel L2 grad_q %.2e grad_k %.2e grad_w %.2e\n", c.name.c_str(),
              std::get<1>(GetParam()).name, got, want, std::abs(got - want) / std::abs(want), eq, ek, ew);
}

INSTANTIATE_TEST_SUITE_P(
    Shapes, DistillLossCudaTest,
    ::testing::Combine(::testing::Values(
        // name, Tq, L, HI, D, HA, DA, served, query_offset, sparse, K
        Case{"odd_dense", 37, 37, 3, 32, 5, 72, 2, 0, false, 0, 1},
        Case{"odd_sparse", 37, 37, 3, 32, 5, 72, 2, 0, true, 48, 2},
        Case{"mid_dense_3layers", 300, 300, 8, 64, 16, 64, 3, 0, false, 0, 3},
        Case{"mid_sparse_3layers", 300, 300, 8, 64, 16, 64, 3, 0, true, 40, 4},
        Case{"offset_dense", 50, 130, 20, 48, 24, 40, 1, 70, false, 0, 5},
        Case{"offset_sparse_4layers", 50, 130, 20, 48, 24, 40, 4, 70, true, 33, 6},
        Case{"v32_heads_dense", 70, 70, 64, 128, 128, 576, 2, 0, false, 0, 7},
        Case{"v32_heads_sparse", 90, 200, 64, 128, 128, 576, 1, 110, true, 64, 8},
        Case{"v32_heads_dense_8layers", 40, 200, 64, 128, 128, 576, 8, 150, false, 0, 9},
        Case{"v32_heads_sparse_5layers", 60, 260, 64, 128, 100, 576, 5, 120, true, 200, 10},
        // The warp-keys student at its register limit (8 x 8 grad_q tiles) and just past it.
        Case{"wide_heads_dense", 45, 150, 128, 128, 12, 40, 2, 100, false, 0, 11},
        Case{"wide_heads_d136_sparse", 45, 150, 128, 136, 12, 40, 1, 100, true, 70, 12}),
        ::testing::Values(Path{DistillTeacherImpl::kMmaSync, DistillStudentImpl::kTiled, "mmasync_tiled"},
                          Path{DistillTeacherImpl::kMmaSync, DistillStudentImpl::kAuto, "mmasync_auto"},
                          Path{DistillTeacherImpl::kWgmma, DistillStudentImpl::kTiled, "wgmma_tiled"},
                          Path{DistillTeacherImpl::kWgmma, DistillStudentImpl::kAuto, "wgmma_auto"})),
    [](const ::testing::TestParamInfo<std::tuple<Case, Path>>& info) {
      return std::get<0>(info.param).name + "_" + std::get<1>(info.param).name;
    });

}  // namespace
}  // namespace indexcache
