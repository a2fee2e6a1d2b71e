// CpuBackend: fp32 activations, Eigen GEMMs and the CPU reference kernels.
#include <cmath>
#include <cstring>

#include <Eigen/Core>

#include "kernels/batched_decode.h"
#include "kernels/cross_entropy.h"
#include "kernels/distill_loss.h"
#include "kernels/elementwise.h"
#include "kernels/fp8_dequant.h"
#include "kernels/fp8_quant.h"
#include "kernels/indexer_topk.h"
#include "kernels/latent_fp8.h"
#include "kernels/moe_dispatch.h"
#include "kernels/moe_routing.h"
#include "kernels/norms.h"
#include "kernels/sparse_mla.h"
#include "model/backend.h"
#include "optim/adamw_update.h"
#include "optim/clip.h"

namespace indexcache {

namespace {

using RowMajor = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
using Map = Eigen::Map<RowMajor>;
using ConstMap = Eigen::Map<const RowMajor>;
using StridedConstMap = Eigen::Map<const RowMajor, 0, Eigen::OuterStride<>>;
using StridedMap = Eigen::Map<RowMajor, 0, Eigen::OuterStride<>>;

// Rows of x quantised as the FP8 indexer's inputs (kernels/fp8_quant.h) and dequantised again:
// e4m3(x / scale) * scale, the values the FP8 path scores.
std::vector<float> Fp8RoundTripRows(const float* x, int64_t rows, int64_t cols) {
  std::vector<uint8_t> codes(static_cast<size_t>(rows * cols));
  std::vector<float> scale(static_cast<size_t>(rows)), y(codes.size());
  Fp8QuantRowsCpu(x, rows, cols, codes.data(), scale.data());
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t c = 0; c < cols; ++c) y[r * cols + c] = Fp8E4M3ToFloat(codes[r * cols + c]) * scale[r];
  }
  return y;
}

// A 2-D view of a tensor whose last axis is `cols` wide.
ConstMap View(const Tensor& t, int64_t cols) { return ConstMap(t.data<float>(), t.numel() / cols, cols); }
Map View(Tensor* t, int64_t cols) { return Map(t->data<float>(), t->numel() / cols, cols); }

MoeRoutingParams RoutingParams(const float* logits, const float* bias, int64_t T, int64_t E, const MoeRouteSpec& spec) {
  MoeRoutingParams p;
  p.logits = logits;
  p.bias = bias;
  p.T = T;
  p.E = E;
  p.n_group = spec.n_group;
  p.topk_group = spec.topk_group;
  p.topk = spec.topk;
  p.norm_topk_prob = spec.norm_topk_prob;
  p.routed_scaling_factor = spec.routed_scaling_factor;
  return p;
}

class CpuBackend final : public Backend {
 public:
  using Backend::AbsorbQuery;
  using Backend::AbsorbValue;
  using Backend::Linear;
  const char* name() const override { return "cpu"; }
  Device device() const override { return Device::kCpu; }
  DType activation_dtype() const override { return DType::kF32; }

  Tensor Alloc(DType dtype, Shape shape) override { return Tensor::Zeros(dtype, std::move(shape)); }
  Tensor Weight(const float* data, Shape shape) override {
    return Tensor::View(DType::kF32, std::move(shape), const_cast<float*>(data), nullptr);
  }
  Tensor WeightF32(const float* data, Shape shape) override { return Weight(data, std::move(shape)); }
  // FP8 stays FP8 only on the GPU: here it becomes an owned f32 copy, as LoadMatrix would make.
  StatusOr<PlacedWeight> WeightFp8(const std::string& name, const Tensor& fp8, const Tensor& scale_inv,
                                   int64_t block_rows, int64_t block_cols) override {
    ASSIGN_OR_RETURN(const Fp8BlockLayout layout, CheckFp8Weight(name, fp8, scale_inv, block_rows, block_cols));
    const Tensor scale = scale_inv.ToFloat32();  // an aligned copy: a mapped view need not be
    PlacedWeight w;
    w.values = Tensor::Zeros(DType::kF32, {layout.rows, layout.cols});
    Fp8DequantCpu(static_cast<const uint8_t*>(fp8.raw()), scale.data<float>(), layout, w.values.data<float>());
    return w;
  }
  Tensor ToDevice(const Tensor& host) override { return host; }
  Tensor Convert(const Tensor& x, DType dtype) override {
    IC_CHECK(dtype == DType::kF32);
    return x.dtype() == DType::kF32 ? x : x.ToFloat32();
  }
  Tensor ToHost(const Tensor& t) override {
    if (IsFloating(t.dtype()) && t.dtype() != DType::kF32) return t.ToFloat32();
    Tensor out = Tensor::Zeros(t.dtype(), t.shape());
    std::memcpy(out.raw(), t.raw(), t.nbytes());
    return out;
  }

  void ResetNonFinite() override { first_nonfinite_ = -1; }
  void NoteNonFinite(const Tensor& x, int32_t tag) override {
    if (first_nonfinite_ >= 0 && first_nonfinite_ <= tag) return;
    IC_CHECK(x.dtype() == DType::kF32);
    const float* p = x.data<float>();
    bool bad = false;
    const int64_t n = x.numel();
#pragma omp parallel for reduction(|| : bad) schedule(static)
    for (int64_t i = 0; i < n; ++i) bad = bad || !std::isfinite(p[i]);
    if (bad) first_nonfinite_ = tag;
  }
  int32_t FirstNonFinite() override { return first_nonfinite_; }

  void CopyRows(const Tensor& src, int64_t dst_row, Tensor* dst) override {
    const int64_t cols = dst->numel() / dst->size(0);
    std::memcpy(dst->data<float>() + dst_row * cols, src.data<float>(), src.numel() * sizeof(float));
  }

  void ScatterRows(const Tensor& src, const Tensor& rows, Tensor* dst) override {
    if (src.numel() == 0) return;
    ScatterRowsCpu(src.raw(), rows.data<int32_t>(), src.size(0), src.nbytes() / src.size(0), dst->raw());
  }

  void QuantizeLatentRows(const Tensor& src, const Tensor& rows, const LatentFp8Layout& layout,
                          Tensor* cache) override {
    QuantizeLatentRowsCpu(src.data<float>(), rows.data<int32_t>(), src.size(0), layout, cache->data<uint8_t>());
  }
  void DequantizeLatentRows(const Tensor& cache, const Tensor& indices, const LatentFp8Layout& layout,
                            Tensor* out) override {
    DequantizeLatentRowsCpu(cache.data<uint8_t>(), indices.data<int32_t>(), indices.numel(), layout,
                            out->data<float>());
  }
  void CompactIndices(Tensor* indices) override {
    CompactIndicesCpu(indices->size(0), indices->size(1), indices->data<int32_t>());
  }
  void OffsetIndices(const Tensor& offsets, Tensor* indices) override {
    OffsetIndicesCpu(offsets.data<int32_t>(), indices->size(0), indices->size(1), indices->data<int32_t>());
  }

  void Embedding(const Tensor& table, const std::vector<int32_t>& tokens, Tensor* y) override {
    EmbeddingCpu(table.data<float>(), tokens.data(), static_cast<int64_t>(tokens.size()), table.size(1),
                 y->data<float>());
  }


  void Linear(const Tensor& x, const Tensor& w, Tensor* y, bool accumulate) override {
    const int64_t N = w.size(0), K = w.size(1);
    auto out = View(y, N);
    if (accumulate) {
      out.noalias() += View(x, K) * ConstMap(w.data<float>(), N, K).transpose();
    } else {
      out.noalias() = View(x, K) * ConstMap(w.data<float>(), N, K).transpose();
    }
  }

  void RmsNorm(const Tensor& x, const Tensor& w, float eps, Tensor* y) override {
    const int64_t D = w.numel();
    RmsNormCpu(x.data<float>(), w.data<float>(), x.numel() / D, D, eps, y->data<float>());
  }

  void LayerNorm(const Tensor& x, const Tensor& w, const Tensor& b, float eps, Tensor* y) override {
    const int64_t D = w.numel();
    LayerNormCpu(x.data<float>(), w.data<float>(), b.data<float>(), x.numel() / D, D, eps, y->data<float>());
  }

  void SiluMul(const Tensor& gate, const Tensor& up, Tensor* y) override {
    SiluMulCpu(gate.data<float>(), up.data<float>(), gate.numel(), y->data<float>());
  }


  void Add(const Tensor& x, Tensor* y) override { AddCpu(x.data<float>(), x.numel(), y->data<float>()); }


  double SumOfSquares(const Tensor& x) override { return indexcache::SumOfSquares(x.data<float>(), x.numel()); }

  void AdamWUpdate(Tensor* p, Tensor* m, Tensor* v, const Tensor& g, const AdamWScalars& s) override {
    AdamWUpdateCpu(p->data<float>(), m->data<float>(), v->data<float>(), g.data<float>(), p->numel(), s);
  }

  void Scale(Tensor* x, float s) override { ScaleCpu(x->data<float>(), x->numel(), s); }


  void Rope(const RopeTable& table, bool interleaved, int64_t heads, int64_t head_stride, int64_t offset,
            Tensor* x) override {
    const int64_t T = x->size(0);
    const int64_t row_stride = x->numel() / T;
    float* base = x->data<float>() + offset;
    if (interleaved) {
      ApplyRopeInterleavedCpu(table, base, T, heads, row_stride, head_stride);
    } else {
      ApplyRopeHalfSplitCpu(table, base, T, heads, row_stride, head_stride);
    }
  }

  void MlaLatent(const Tensor& ckv, const Tensor& kv_norm, float eps, const RopeTable& table, const MlaDims& d,
                 Tensor* latent) override {
    const int64_t T = ckv.size(0), L = d.latent();
    RmsNormCpu(ckv.data<float>(), kv_norm.data<float>(), T, d.kv_lora, eps, latent->data<float>(), L, L);
    for (int64_t t = 0; t < T; ++t) {
      std::memcpy(latent->data<float>() + t * L + d.kv_lora, ckv.data<float>() + t * L + d.kv_lora,
                  d.rope * sizeof(float));
    }
    ApplyRopeInterleavedCpu(table, latent->data<float>() + d.kv_lora, T, 1, L, 0);
  }

  void AbsorbQuery(const Tensor& q, const Tensor& kv_b, const MlaDims& d, Tensor* q_abs) override {
    const int64_t T = q.size(0), H = d.heads, qk = d.qk(), L = d.latent();
    const ConstMap w(kv_b.data<float>(), H * (d.nope + d.v), d.kv_lora);
    for (int64_t h = 0; h < H; ++h) {
      StridedConstMap q_nope(q.data<float>() + h * qk, T, d.nope, Eigen::OuterStride<>(H * qk));
      StridedMap out(q_abs->data<float>() + h * L, T, d.kv_lora, Eigen::OuterStride<>(H * L));
      out.noalias() = q_nope * w.block(h * (d.nope + d.v), 0, d.nope, d.kv_lora);
      StridedConstMap q_rope(q.data<float>() + h * qk + d.nope, T, d.rope, Eigen::OuterStride<>(H * qk));
      StridedMap out_rope(q_abs->data<float>() + h * L + d.kv_lora, T, d.rope, Eigen::OuterStride<>(H * L));
      out_rope = q_rope;
    }
  }

  void AbsorbValue(const Tensor& out_lat, const Tensor& kv_b, const MlaDims& d, Tensor* out) override {
    const int64_t T = out_lat.size(0), H = d.heads;
    const ConstMap w(kv_b.data<float>(), H * (d.nope + d.v), d.kv_lora);
    for (int64_t h = 0; h < H; ++h) {
      StridedConstMap lat(out_lat.data<float>() + h * d.kv_lora, T, d.kv_lora, Eigen::OuterStride<>(H * d.kv_lora));
      StridedMap o(out->data<float>() + h * d.v, T, d.v, Eigen::OuterStride<>(H * d.v));
      o.noalias() = lat * w.block(h * (d.nope + d.v) + d.nope, 0, d.v, d.kv_lora).transpose();
    }
  }

  void SparseMla(const Tensor& q_abs, const Tensor& latent, const Tensor& indices, const MlaDims& d, float scale,
                 Tensor* out_lat, Tensor* lse) override {
    SparseMlaParams p;
    p.q = q_abs.data<float>();
    p.kv = latent.data<float>();
    p.indices = indices.data<int32_t>();
    p.T = q_abs.size(0);
    p.H = d.heads;
    p.d_qk = d.latent();
    p.d_v = d.kv_lora;
    p.L = latent.size(0);
    p.topk = indices.size(1);
    p.scale = scale;
    p.out = out_lat->data<float>();
    p.lse = lse->data<float>();
    SparseMlaCpu(p);
  }

  void IndexerTopk(const Tensor& q, const Tensor& k, const Tensor& weights, int64_t topk, int64_t query_offset,
                   float scale, Tensor* indices) override {
    IndexerTopkParams p;
    p.q = q.data<float>();
    p.k = k.data<float>();
    p.weights = weights.data<float>();
    p.T = q.size(0);
    p.L = k.size(0);
    p.H = weights.size(1);
    p.D = k.size(1);
    p.topk = topk;
    p.query_offset = query_offset;
    p.scale = scale;
    p.out_indices = indices->data<int32_t>();
    std::vector<float> q_fp8, k_fp8;  // the FP8 indexer's inputs, dequantised
    if (UsesFp8Indexer(p.T, p.H, p.D)) {
      q_fp8 = Fp8RoundTripRows(p.q, p.T * p.H, p.D);
      k_fp8 = Fp8RoundTripRows(p.k, p.L, p.D);
      p.q = q_fp8.data();
      p.k = k_fp8.data();
    }
    IndexerTopkCpu(p);
  }

  void MoeRoute(const Tensor& logits, const Tensor& bias, const MoeRouteSpec& spec, Tensor* experts,
                Tensor* weights) override {
    MoeRoutingParams p = RoutingParams(logits.data<float>(), bias.data<float>(), logits.size(0), logits.size(1), spec);
    p.out_experts = experts->data<int32_t>();
    p.out_weights = weights->data<float>();
    MoeRoutingCpu(p);
  }

  MoeGrouping MoeGroupByExpert(const Tensor& experts, int64_t E) override {
    const int64_t n = experts.numel();
    MoeGrouping g;
    g.order = Tensor::Zeros(DType::kI32, {n});
    g.inverse = Tensor::Zeros(DType::kI32, {n});
    g.offsets.resize(E + 1);
    MoeGroupByExpertCpu(experts.data<int32_t>(), n, E, g.order.data<int32_t>(), g.inverse.data<int32_t>(),
                        g.offsets.data());
    return g;
  }

  void MoeGather(const Tensor& x, const Tensor& order, int64_t k, Tensor* y) override {
    MoeGatherCpu(x.data<float>(), order.data<int32_t>(), order.numel(), k, x.size(1), y->data<float>());
  }

  // The reference: each expert with rows runs as its own MLP over its slice of the permuted rows.
  void ExpertMlps(const std::vector<BackendMlp>& experts, const Tensor& x, const std::vector<int32_t>& offsets,
                  Tensor* out) override {
    const int64_t H = x.size(1);
    for (size_t e = 0; e < experts.size(); ++e) {
      const int64_t begin = offsets[e], n = offsets[e + 1] - offsets[e];
      if (n == 0) continue;
      const BackendMlp& w = experts[e];
      const int64_t I = w.gate.size(0);
      const Tensor xe = x.Sub(begin * H, {n, H});
      Tensor ye = out->Sub(begin * H, {n, H});
      Tensor gate = Tensor::Zeros(DType::kF32, {n, I}), up = Tensor::Zeros(DType::kF32, {n, I});
      Linear(xe, w.gate, &gate);
      Linear(xe, w.up, &up);
      SiluMul(gate, up, &gate);
      Linear(gate, w.down, &ye);
    }
  }

  void MoeCombine(const Tensor& rows, const Tensor& inverse, const Tensor& weights, Tensor* y) override {
    MoeCombineCpu(rows.data<float>(), inverse.data<int32_t>(), weights.data<float>(), weights.size(0),
                  weights.size(1), y->size(1), y->data<float>());
  }

  void Gemm(const Tensor& a, bool ta, const Tensor& b, bool tb, float alpha, float beta, Tensor* c) override {
    const ConstMap A(a.data<float>(), a.size(0), a.numel() / a.size(0));
    const ConstMap B(b.data<float>(), b.size(0), b.numel() / b.size(0));
    Map C(c->data<float>(), c->size(0), c->numel() / c->size(0));
    if (beta == 0.0f) C.setZero(); else if (beta != 1.0f) C *= beta;
    if (!ta && !tb) C.noalias() += alpha * A * B;
    if (!ta && tb) C.noalias() += alpha * A * B.transpose();
    if (ta && !tb) C.noalias() += alpha * A.transpose() * B;
    if (ta && tb) C.noalias() += alpha * A.transpose() * B.transpose();
  }

  void LayerNormTrain(const Tensor& x, const Tensor& w, const Tensor& b, float eps, Tensor* y, Tensor* xhat,
                      Tensor* inv) override {
    const int64_t D = w.numel();
    LayerNormTrainCpu(x.data<float>(), w.data<float>(), b.data<float>(), x.numel() / D, D, eps, y->data<float>(),
                      xhat->data<float>(), inv->data<float>());
  }


  void LayerNormBackward(const Tensor& dy, const Tensor& xhat, const Tensor& inv, const Tensor& w, Tensor* dx,
                         Tensor* dw, Tensor* db) override {
    const int64_t D = w.numel();
    LayerNormBackwardCpu(dy.data<float>(), xhat.data<float>(), inv.data<float>(), w.data<float>(), dy.numel() / D, D,
                         dx->data<float>(), dw->data<float>(), db->data<float>());
  }


  std::vector<double> CrossEntropyRows(const Tensor& logits, const std::vector<int32_t>& targets) override {
    const int64_t rows = logits.size(0);
    IC_CHECK(static_cast<int64_t>(targets.size()) == rows);
    std::vector<double> nll(rows);
    CrossEntropyRowsCpu(logits.data<float>(), targets.data(), rows, logits.size(1), nll.data());
    return nll;
  }

  double DistillLoss(const DistillLossArgs& a) override {
    DistillLossParams p;
    p.q = a.q.data<float>();
    p.k = a.k.data<float>();
    p.w = a.w.data<float>();
    p.Tq = a.q.size(0);
    p.L = a.k.size(0);
    p.HI = a.w.size(1);
    p.D = a.k.size(1);
    p.index_scale = a.index_scale;
    p.query_offset = a.query_offset;
    for (size_t j = 0; j < a.attn_q.size(); ++j) {
      p.attn_q.push_back(a.attn_q[j].data<float>());
      p.attn_kv.push_back(a.attn_kv[j].data<float>());
    }
    p.HA = a.attn_q[0].size(1);
    p.DA = a.attn_q[0].size(2);
    p.attn_scale = a.attn_scale;
    p.sparse = a.sparse;
    p.topk = a.topk.empty() ? nullptr : a.topk.data<int32_t>();
    p.K = a.topk.empty() ? 0 : a.topk.size(1);
    double loss = 0.0;
    p.loss = &loss;
    p.grad_q = a.grad_q->data<float>();
    p.grad_k = a.grad_k->data<float>();
    p.grad_w = a.grad_w->data<float>();
    DistillLossCpu(p);
    return loss;
  }

 private:
  int32_t first_nonfinite_ = -1;
};

}  // namespace

MoeRouting MoeRouteOnHost(const float* logits, const float* bias, int64_t T, int64_t E, const MoeRouteSpec& spec) {
  MoeRouting r;
  r.experts.resize(T * spec.topk);
  r.weights.resize(T * spec.topk);
  MoeRoutingParams p = RoutingParams(logits, bias, T, E, spec);
  p.out_experts = r.experts.data();
  p.out_weights = r.weights.data();
  MoeRoutingCpu(p);
  return r;
}

StatusOr<Fp8BlockLayout> CheckFp8Weight(const std::string& name, const Tensor& fp8, const Tensor& scale_inv,
                                        int64_t block_rows, int64_t block_cols) {
  if (fp8.dtype() != DType::kF8E4M3 || !fp8.is_contiguous() || fp8.device() != Device::kCpu) {
    return InvalidArgument("tensor '" + name + "': expected contiguous host F8_E4M3 data, got " +
                           DTypeName(fp8.dtype()));
  }
  if (scale_inv.dtype() != DType::kF32 || !scale_inv.is_contiguous() || scale_inv.device() != Device::kCpu) {
    return InvalidArgument("tensor '" + name + "': block scales have dtype " + DTypeName(scale_inv.dtype()) +
                           ", expected contiguous host F32");
  }
  return Fp8BlockLayoutOf(name, fp8.shape(), scale_inv.shape(), block_rows, block_cols);
}

std::unique_ptr<Backend> MakeCpuBackend() { return std::make_unique<CpuBackend>(); }

}  // namespace indexcache
