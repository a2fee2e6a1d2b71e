// CudaBackend: bf16 activations and weights on one GPU, fp32 accumulation; cuBLAS for every GEMM
// (plain and strided-batched for the per-head MLA absorption), our kernels for the rest.
//
// An FP8 checkpoint's matrices stay FP8 here (WeightFp8: e4m3 bytes + fp32 block scales, half the
// bytes of bf16). Each use dequantises the matrix just in time (kernels/fp8_dequant_cuda.h) into
// one bf16 scratch, as large as the largest FP8 matrix placed, which the GEMM then reads as it
// would a bf16 weight; the scratch remembers which weight it holds, so kv_b's two uses per layer
// (AbsorbQuery, AbsorbValue) dequantise it once.
//
// All work runs on the legacy default stream, so host copies (ToHost, index uploads) order
// themselves after the kernels that produce their inputs. Device memory comes from a small
// caching pool: the forward allocates many short-lived activations, and cudaMalloc/cudaFree would
// synchronise the device on every one.
#include <cublas_v2.h>
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <map>
#include <mutex>
#include <vector>

#include "core/cuda_check.h"
#include "kernels/batched_decode_cuda.h"
#include "kernels/cross_entropy_cuda.h"
#include "kernels/distill_loss_cuda.h"
#include "kernels/elementwise_cuda.h"
#include "kernels/finite_check_cuda.h"
#include "kernels/fp8_dequant_cuda.h"
#include "kernels/fp8_quant_cuda.h"
#include "kernels/indexer_topk_cuda.h"
#include "kernels/latent_fp8_cuda.h"
#include "kernels/moe_dispatch_cuda.h"
#include "kernels/moe_experts_cuda.h"
#include "kernels/moe_routing_cuda.h"
#include "kernels/norms_cuda.h"
#include "kernels/rope_cuda.h"
#include "kernels/sparse_mla_cuda.h"
#include "kernels/sparse_mla_generic_cuda.h"
#include "model/backend.h"
#include "optim/adamw_cuda.h"
#include "optim/clip_cuda.h"

namespace indexcache {

namespace {

class DevicePool : public std::enable_shared_from_this<DevicePool> {
 public:
  ~DevicePool() {
    for (auto& [size, blocks] : free_) {
      for (void* p : blocks) cudaFree(p);
    }
  }
  // A zero-filled block whose shared_ptr returns it to the pool.
  std::shared_ptr<void> Get(size_t bytes) {
    const size_t size = RoundUp(std::max<size_t>(bytes, 1));
    void* p = nullptr;
    {
      std::lock_guard<std::mutex> lock(mu_);
      auto it = free_.find(size);
      if (it != free_.end() && !it->second.empty()) {
        p = it->second.back();
        it->second.pop_back();
      }
    }
    if (!p) {
      cudaError_t err = cudaMalloc(&p, size);
      if (err == cudaErrorMemoryAllocation) {
        // Blocks cached for other sizes (earlier chunk shapes, other sequence lengths) may be what
        // is missing: hand them all back to the driver and try once more.
        (void)cudaGetLastError();
        Trim();
        err = cudaMalloc(&p, size);
      }
      if (err == cudaErrorMemoryAllocation) {
        (void)cudaGetLastError();  // clear the sticky-free error so the process can report and exit
        // Like a host allocation failure: one error line at the command boundary, not an abort.
        throw AllocationError("out of GPU memory: cannot allocate " + std::to_string(size) + " bytes");
      }
      CUDA_CHECK(err);
    }
    CUDA_CHECK(cudaMemsetAsync(p, 0, size, nullptr));
    std::weak_ptr<DevicePool> pool = shared_from_this();
    return std::shared_ptr<void>(p, [pool, size](void* q) {
      if (auto live = pool.lock()) {
        std::lock_guard<std::mutex> lock(live->mu_);
        live->free_[size].push_back(q);
      } else {
        cudaFree(q);
      }
    });
  }

  // Frees every cached block (cudaFree waits for the work that used them).
  void Trim() {
    std::lock_guard<std::mutex> lock(mu_);
    for (auto& [size, blocks] : free_) {
      for (void* p : blocks) CUDA_CHECK(cudaFree(p));
    }
    free_.clear();
  }

 private:
  static size_t RoundUp(size_t n) {
    const size_t granule = n < (1u << 20) ? 4096 : (2u << 20);
    return (n + granule - 1) / granule * granule;
  }
  std::mutex mu_;
  std::map<size_t, std::vector<void*>> free_;
};

bf16* B(Tensor& t) { return t.data<bf16>(); }
const bf16* B(const Tensor& t) { return t.data<bf16>(); }

cudaDataType_t CublasType(DType d) {
  IC_CHECK(d == DType::kBF16 || d == DType::kF32);
  return d == DType::kBF16 ? CUDA_R_16BF : CUDA_R_32F;
}

class CudaBackend final : public Backend {
 public:
  using Backend::AbsorbQuery;
  using Backend::AbsorbValue;
  using Backend::Linear;

  CudaBackend() : pool_(std::make_shared<DevicePool>()) { CUBLAS_CHECK(cublasCreate(&cublas_)); }
  ~CudaBackend() override {
    cublasDestroy(cublas_);
  }

  const char* name() const override { return "cuda"; }
  Device device() const override { return Device::kCuda; }
  DType activation_dtype() const override { return DType::kBF16; }
  void Synchronize() override { CUDA_CHECK(cudaDeviceSynchronize()); }

  Tensor Alloc(DType dtype, Shape shape) override {
    // Checked like Tensor::Zeros: an overflowing or absurd size throws AllocationError.
    auto checked = CheckedNumBytes(dtype, shape);
    if (!checked.ok()) throw AllocationError(checked.status().message());
    const int64_t bytes = *checked;
    std::shared_ptr<void> block = pool_->Get(static_cast<size_t>(bytes));
    return Tensor::View(dtype, std::move(shape), block.get(), block, Device::kCuda);
  }

  Tensor Weight(const float* data, Shape shape) override {
    const int64_t n = NumElements(shape);
    std::vector<uint16_t> host(n);
#pragma omp parallel for schedule(static) if (n > (1 << 20))
    for (int64_t i = 0; i < n; ++i) host[i] = FloatToBf16(data[i]);
    Tensor t = Alloc(DType::kBF16, std::move(shape));
    CUDA_CHECK(cudaMemcpy(t.raw(), host.data(), n * 2, cudaMemcpyHostToDevice));
    return t;
  }

  Tensor WeightF32(const float* data, Shape shape) override {
    Tensor t = Alloc(DType::kF32, std::move(shape));
    CUDA_CHECK(cudaMemcpy(t.raw(), data, t.nbytes(), cudaMemcpyHostToDevice));
    return t;
  }

  bool KeepsFp8Weights() const override { return true; }

  // The e4m3 bytes and the scales are copied as they are (the source may be a mapped shard). The
  // scratch is sized here, at load, so running out of memory shows when the model loads.
  StatusOr<PlacedWeight> WeightFp8(const std::string& name, const Tensor& fp8, const Tensor& scale_inv,
                                   int64_t block_rows, int64_t block_cols) override {
    ASSIGN_OR_RETURN(const Fp8BlockLayout layout, CheckFp8Weight(name, fp8, scale_inv, block_rows, block_cols));
    PlacedWeight w;
    w.values = Alloc(DType::kF8E4M3, {layout.rows, layout.cols});
    w.scale_inv = Alloc(DType::kF32, {layout.scale_rows(), layout.scale_cols()});
    w.block_rows = block_rows;
    w.block_cols = block_cols;
    CUDA_CHECK(cudaMemcpy(w.values.raw(), fp8.raw(), w.values.nbytes(), cudaMemcpyHostToDevice));
    CUDA_CHECK(cudaMemcpy(w.scale_inv.raw(), scale_inv.raw(), w.scale_inv.nbytes(), cudaMemcpyHostToDevice));
    ReserveFp8Scratch(layout.numel());
    return w;
  }

  // The old scratch goes back to the pool: work already queued that reads it runs before anything
  // queued later can write it (one stream).
  void ReserveFp8Scratch(int64_t elements) override {
    if (!fp8_scratch_.empty() && fp8_scratch_.numel() >= elements) return;
    fp8_scratch_ = Alloc(DType::kBF16, {elements});
    fp8_scratch_holds_ = Tensor();
  }

  int64_t Fp8ScratchBytes() const override { return fp8_scratch_.empty() ? 0 : fp8_scratch_.nbytes(); }

  int64_t FreeDeviceBytes() override {
    size_t free = 0, total = 0;
    CUDA_CHECK(cudaMemGetInfo(&free, &total));
    return static_cast<int64_t>(free);
  }

  Tensor ToDevice(const Tensor& host) override {
    if (host.device() == Device::kCuda) return host;
    Tensor t = Alloc(host.dtype(), host.shape());
    CUDA_CHECK(cudaMemcpy(t.raw(), host.raw(), host.nbytes(), cudaMemcpyHostToDevice));
    return t;
  }

  Tensor ToHost(const Tensor& t) override {
    Tensor host = Tensor::Zeros(t.dtype(), t.shape());
    CUDA_CHECK(cudaMemcpy(host.raw(), t.raw(), t.nbytes(), cudaMemcpyDeviceToHost));
    if (t.dtype() == DType::kBF16) return host.ToFloat32();
    return host;
  }

  Tensor Convert(const Tensor& x, DType dtype) override {
    if (x.dtype() == dtype) return x;
    Tensor y = Alloc(dtype, x.shape());
    if (x.dtype() == DType::kBF16 && dtype == DType::kF32) {
      Bf16ToF32Cuda(B(x), x.numel(), y.data<float>(), nullptr);
    } else if (x.dtype() == DType::kF32 && dtype == DType::kBF16) {
      F32ToBf16Cuda(x.data<float>(), x.numel(), B(y), nullptr);
    } else {
      IC_CHECK(false && "unsupported conversion");
    }
    return y;
  }

  // cudaMemsetAsync fills bytes: 0x7f7f7f7f is "no tag" (tags are layer numbers, far below it).
  static constexpr int32_t kNoTag = 0x7f7f7f7f;
  int32_t* NonFiniteFlag() {
    if (nonfinite_flag_.empty()) {
      nonfinite_flag_ = Alloc(DType::kI32, {1});
      ResetNonFinite();
    }
    return nonfinite_flag_.data<int32_t>();
  }
  void ResetNonFinite() override { CUDA_CHECK(cudaMemsetAsync(NonFiniteFlag(), 0x7f, sizeof(int32_t), nullptr)); }
  void NoteNonFinite(const Tensor& x, int32_t tag) override {
    IC_CHECK(x.dtype() == DType::kBF16 || x.dtype() == DType::kF32);
    NoteNonFiniteCuda(x.raw(), x.dtype() == DType::kBF16, x.numel(), tag, NonFiniteFlag(), nullptr);
  }
  int32_t FirstNonFinite() override {
    int32_t tag = kNoTag;
    CUDA_CHECK(cudaMemcpy(&tag, NonFiniteFlag(), sizeof(int32_t), cudaMemcpyDeviceToHost));
    return tag >= kNoTag ? -1 : tag;
  }

  void CopyRows(const Tensor& src, int64_t dst_row, Tensor* dst) override {
    const int64_t row_bytes = dst->nbytes() / dst->size(0);
    CUDA_CHECK(cudaMemcpyAsync(static_cast<char*>(dst->raw()) + dst_row * row_bytes, src.raw(), src.nbytes(),
                               cudaMemcpyDeviceToDevice, nullptr));
  }

  void ScatterRows(const Tensor& src, const Tensor& rows, Tensor* dst) override {
    if (src.numel() == 0) return;
    ScatterRowsCuda(src.raw(), rows.data<int32_t>(), src.size(0), src.nbytes() / src.size(0), dst->raw(), nullptr);
  }

  void QuantizeLatentRows(const Tensor& src, const Tensor& rows, const LatentFp8Layout& layout,
                          Tensor* cache) override {
    QuantizeLatentRowsCuda(src.data<__nv_bfloat16>(), rows.data<int32_t>(), src.size(0), layout,
                           cache->data<uint8_t>(), nullptr);
  }
  void DequantizeLatentRows(const Tensor& cache, const Tensor& indices, const LatentFp8Layout& layout,
                            Tensor* out) override {
    DequantizeLatentRowsCuda(cache.data<uint8_t>(), indices.data<int32_t>(), indices.numel(), layout,
                             out->data<__nv_bfloat16>(), nullptr);
  }
  void CompactIndices(Tensor* indices) override {
    CompactIndicesCuda(indices->size(0), indices->size(1), indices->data<int32_t>(), nullptr);
  }
  void OffsetIndices(const Tensor& offsets, Tensor* indices) override {
    OffsetIndicesCuda(offsets.data<int32_t>(), indices->size(0), indices->size(1), indices->data<int32_t>(), nullptr);
  }

  void Embedding(const Tensor& table, const std::vector<int32_t>& tokens, Tensor* y) override {
    const Tensor ids = Upload(tokens);
    EmbeddingCuda(B(table), ids.data<int32_t>(), static_cast<int64_t>(tokens.size()), table.size(1), B(*y), nullptr);
  }

  // Row-major y[M, N] = x[M, K] w[N, K]^T is column-major y^T = w x^T: cuBLAS op(A) = T on w.
  void Linear(const Tensor& x, const Tensor& w, Tensor* y, bool accumulate) override {
    const int64_t N = w.size(0), K = w.size(1), M = x.numel() / K;
    IC_CHECK(x.dtype() == w.dtype());
    const float alpha = 1.0f, beta = accumulate ? 1.0f : 0.0f;
    CUBLAS_CHECK(cublasGemmEx(cublas_, CUBLAS_OP_T, CUBLAS_OP_N, static_cast<int>(N), static_cast<int>(M),
                              static_cast<int>(K), &alpha, w.raw(), CublasType(w.dtype()), static_cast<int>(K),
                              x.raw(), CublasType(x.dtype()), static_cast<int>(K), &beta, y->raw(),
                              CublasType(y->dtype()), static_cast<int>(N), CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
  }

  void RmsNorm(const Tensor& x, const Tensor& w, float eps, Tensor* y) override {
    const int64_t D = w.numel();
    RmsNormCuda<bf16>(B(x), B(w), x.numel() / D, D, eps, B(*y), nullptr);
  }

  void LayerNorm(const Tensor& x, const Tensor& w, const Tensor& b, float eps, Tensor* y) override {
    const int64_t D = w.numel();
    LayerNormCuda(B(x), B(w), B(b), x.numel() / D, D, eps, B(*y), nullptr);
  }

  void SiluMul(const Tensor& gate, const Tensor& up, Tensor* y) override {
    SiluMulCuda(B(gate), B(up), gate.numel(), B(*y), nullptr);
  }

  void Add(const Tensor& x, Tensor* y) override { AddCuda(B(x), x.numel(), B(*y), nullptr); }

  double SumOfSquares(const Tensor& x) override {
    if (sum_sq_.empty()) sum_sq_ = Alloc(DType::kF64, {1 + kSumOfSquaresWorkspace});
    double* d = sum_sq_.data<double>();
    SumOfSquaresCuda<double>(x.data<float>(), x.numel(), d, d + 1, /*accumulate=*/false, nullptr);
    double total = 0.0;
    CUDA_CHECK(cudaMemcpy(&total, d, sizeof(double), cudaMemcpyDeviceToHost));
    return total;
  }

  void AdamWUpdate(Tensor* p, Tensor* m, Tensor* v, const Tensor& g, const AdamWScalars& s) override {
    AdamWUpdateCuda(p->data<float>(), m->data<float>(), v->data<float>(), g.data<float>(), p->numel(), s, nullptr);
  }

  void Scale(Tensor* x, float s) override {
    if (x->dtype() == DType::kF32) {
      ScaleCuda(x->data<float>(), x->numel(), s, nullptr);
    } else {
      ScaleCuda(B(*x), x->numel(), s, nullptr);
    }
  }

  void Rope(const RopeTable& table, bool interleaved, int64_t heads, int64_t head_stride, int64_t offset,
            Tensor* x) override {
    const int64_t T = x->size(0);
    const auto [cos, sin] = UploadTable(table);
    if (x->dtype() == DType::kF32) {
      RopeCuda(cos.data<float>(), sin.data<float>(), T, table.rope_dim / 2, interleaved, heads, x->numel() / T,
               head_stride, offset, x->data<float>(), nullptr);
    } else {
      RopeCuda(cos.data<float>(), sin.data<float>(), T, table.rope_dim / 2, interleaved, heads, x->numel() / T,
               head_stride, offset, B(*x), nullptr);
    }
  }

  void MlaLatent(const Tensor& ckv, const Tensor& kv_norm, float eps, const RopeTable& table, const MlaDims& d,
                 Tensor* latent) override {
    const auto [cos, sin] = UploadTable(table);
    MlaLatentCuda(B(ckv), B(kv_norm), eps, cos.data<float>(), sin.data<float>(), ckv.size(0), d.kv_lora, d.rope / 2,
                  B(*latent), nullptr);
  }

  // Per head h (batched): q_abs[:, h, :kv_lora] = q[:, h, :nope] W_uk[h]. Column-major:
  // q_abs_h^T [kv_lora, T] = W_uk[h]^T [kv_lora, nope] q_h^T [nope, T]; both operands untransposed.
  void AbsorbQuery(const Tensor& q, const Tensor& kv_b, const MlaDims& d, Tensor* q_abs) override {
    const int64_t T = q.size(0), H = d.heads, qk = d.qk(), L = d.latent();
    const float alpha = 1.0f, beta = 0.0f;
    CUBLAS_CHECK(cublasGemmStridedBatchedEx(
        cublas_, CUBLAS_OP_N, CUBLAS_OP_N, static_cast<int>(d.kv_lora), static_cast<int>(T), static_cast<int>(d.nope),
        &alpha, kv_b.raw(), CUDA_R_16BF, static_cast<int>(d.kv_lora), (d.nope + d.v) * d.kv_lora, q.raw(), CUDA_R_16BF,
        static_cast<int>(H * qk), qk, &beta, q_abs->raw(), CUDA_R_16BF, static_cast<int>(H * L), L,
        static_cast<int>(H), CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
    // The rope part passes through unchanged.
    CUDA_CHECK(cudaMemcpy2DAsync(B(*q_abs) + d.kv_lora, L * 2, B(q) + d.nope, qk * 2, d.rope * 2, T * H,
                                 cudaMemcpyDeviceToDevice, nullptr));
  }

  // Per head h: out[:, h*v : (h+1)*v] = out_lat[:, h, :] W_uv[h]^T. Column-major:
  // out_h^T [v, T] = W_uv[h] [v, kv_lora] out_lat_h^T [kv_lora, T]; W_uv stored row-major, so op T.
  void AbsorbValue(const Tensor& out_lat, const Tensor& kv_b, const MlaDims& d, Tensor* out) override {
    const int64_t T = out_lat.size(0), H = d.heads;
    const float alpha = 1.0f, beta = 0.0f;
    CUBLAS_CHECK(cublasGemmStridedBatchedEx(
        cublas_, CUBLAS_OP_T, CUBLAS_OP_N, static_cast<int>(d.v), static_cast<int>(T), static_cast<int>(d.kv_lora),
        &alpha, B(kv_b) + d.nope * d.kv_lora, CUDA_R_16BF, static_cast<int>(d.kv_lora), (d.nope + d.v) * d.kv_lora,
        out_lat.raw(), CUDA_R_16BF, static_cast<int>(H * d.kv_lora), d.kv_lora, &beta, out->raw(), CUDA_R_16BF,
        static_cast<int>(H * d.v), d.v, static_cast<int>(H), CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
  }

  // Each kernel's own Supports function (next to its dispatcher) decides; the errors name the
  // config.json field.
  Status SupportsModel(const ModelConfig& c) const override {
    IndexerTopkCudaSizes indexer;
    indexer.heads = c.index_n_heads;
    indexer.head_dim = c.index_head_dim;
    indexer.topk = c.index_topk;
    RETURN_IF_ERROR(IndexerTopkCudaSupports(indexer));
    if (c.n_routed_experts > 0) {
      RETURN_IF_ERROR(MoeRoutingCudaSupports(c.n_routed_experts, c.n_group, c.topk_group, c.num_experts_per_tok));
    }
    return SparseMlaCudaSupports(c.latent_dim(), c.kv_lora_rank, c.index_topk);
  }

  Status SupportsTraining(const ModelConfig& c, const IndexPattern& pattern, bool sparse) const override {
    DistillLossCudaSizes d;
    d.index_heads = c.index_n_heads;
    d.index_head_dim = c.index_head_dim;
    d.attention_heads = c.num_heads;
    d.latent_dim = c.latent_dim();
    for (int l = 0; l < pattern.num_layers(); ++l) {
      if (pattern.is_full(l)) d.max_served = std::max<int64_t>(d.max_served, pattern.served_by(l).size());
    }
    d.topk = c.index_topk;
    d.sparse = sparse;
    return DistillLossCudaSupports(d);
  }

  void SparseMla(const Tensor& q_abs, const Tensor& latent, const Tensor& indices, const MlaDims& d, float scale,
                 Tensor* out_lat, Tensor* lse) override {
    SparseMlaCudaParams p;
    p.q = B(q_abs);
    p.kv = B(latent);
    p.indices = indices.data<int32_t>();
    p.T = q_abs.size(0);
    p.H = d.heads;
    p.d_qk = d.latent();
    p.d_v = d.kv_lora;
    p.L = latent.size(0);
    p.topk = indices.size(1);
    p.scale = scale;
    p.out = B(*out_lat);
    p.lse = lse->data<float>();
    // The wgmma kernel covers the production sizes; small test models take the generic one.
    if (p.d_qk == 576 && p.d_v == 512) {
      SparseMlaCuda(p, nullptr);
    } else {
      SparseMlaGenericCuda(p, nullptr);
    }
  }

  // V3.2's sizes (d_qk 576 = 512 + 64, d_v 512, bf16 activations) read the FP8 cache in place;
  // anything else takes the gather of the default.
  void SparseMlaFp8Cache(const Tensor& q_abs, const Tensor& cache, const LatentFp8Layout& layout,
                         const Tensor& indices, const MlaDims& d, float scale, Tensor* out_lat, Tensor* lse) override {
    const bool fits = fused_fp8_latents_ && q_abs.dtype() == DType::kBF16 && d.latent() == 576 && d.kv_lora == 512 &&
                      layout.nope == 512 && layout.rope == 64 && scale > 0.f;
    if (!fits) {
      Backend::SparseMlaFp8Cache(q_abs, cache, layout, indices, d, scale, out_lat, lse);
      return;
    }
    SparseMlaCudaParams p;
    p.q = B(q_abs);
    p.kv_fp8 = cache.data<uint8_t>();
    p.indices = indices.data<int32_t>();
    p.T = q_abs.size(0);
    p.H = d.heads;
    p.L = cache.size(0);
    p.topk = indices.size(1);
    p.scale = scale;
    p.out = B(*out_lat);
    p.lse = lse->data<float>();
    SparseMlaCuda(p, nullptr);
  }

  void IndexerTopk(const Tensor& q, const Tensor& k, const Tensor& weights, int64_t topk, int64_t query_offset,
                   float scale, Tensor* indices) override {
    IndexerTopkCudaParams p;
    p.q = B(q);
    p.k = B(k);
    p.weights = weights.data<float>();
    p.T = q.size(0);
    p.L = k.size(0);
    p.H = weights.size(1);
    p.D = k.size(1);
    p.topk = topk;
    p.query_offset = query_offset;
    p.scale = scale;
    p.out_indices = indices->data<int32_t>();
    Tensor q8, qs, k8, ks;  // the FP8 indexer's e4m3 rows and scales (Backend::UsesFp8Indexer)
    if (UsesFp8Indexer(p.T, p.H, p.D)) {
      q8 = Alloc(DType::kU8, {p.T * p.H * p.D});
      qs = Alloc(DType::kF32, {p.T * p.H});
      k8 = Alloc(DType::kU8, {p.L * p.D});
      ks = Alloc(DType::kF32, {p.L});
      Fp8QuantRowsCuda(p.q, p.T * p.H, p.D, q8.data<uint8_t>(), qs.data<float>(), nullptr);
      Fp8QuantRowsCuda(p.k, p.L, p.D, k8.data<uint8_t>(), ks.data<float>(), nullptr);
      p.q_fp8 = q8.data<uint8_t>();
      p.q_scale = qs.data<float>();
      p.k_fp8 = k8.data<uint8_t>();
      p.k_scale = ks.data<float>();
    }
    Tensor workspace = Alloc(DType::kU8, {static_cast<int64_t>(IndexerTopkCudaWorkspaceBytes(p))});
    p.workspace = workspace.raw();
    p.workspace_bytes = static_cast<size_t>(workspace.nbytes());
    IndexerTopkCuda(p);
  }

  // One launch for the whole batch: the split-keys path with a key range per query
  // (IndexerTopkCudaParams::key_begin), bit-identical per request to a call on its own keys.
  void IndexerTopkRequests(const Tensor& q, const Tensor& keys, const Tensor& weights, int64_t topk,
                           const std::vector<int64_t>& key_begin, const std::vector<int64_t>& key_count, float scale,
                           Tensor* indices) override {
    const int64_t n = q.size(0);
    if (n == 0) return;
    Tensor begin_host = Tensor::Zeros(DType::kI32, {n}), count_host = Tensor::Zeros(DType::kI32, {n});
    int64_t longest = 0;
    for (int64_t i = 0; i < n; ++i) {
      begin_host.data<int32_t>()[i] = static_cast<int32_t>(key_begin[i]);
      count_host.data<int32_t>()[i] = static_cast<int32_t>(key_count[i]);
      longest = std::max(longest, key_count[i]);
    }
    const Tensor begin = ToDevice(begin_host), count = ToDevice(count_host);
    IndexerTopkCudaParams p;
    p.q = B(q);
    p.k = B(keys);
    p.weights = weights.data<float>();
    p.key_end = count.data<int32_t>();
    p.key_begin = begin.data<int32_t>();
    p.T = n;
    p.L = longest;
    p.H = weights.size(1);
    p.D = keys.size(1);
    p.topk = topk;
    p.scale = scale;
    p.out_indices = indices->data<int32_t>();
    Tensor workspace = Alloc(DType::kU8, {static_cast<int64_t>(IndexerTopkCudaWorkspaceBytes(p))});
    p.workspace = workspace.raw();
    p.workspace_bytes = static_cast<size_t>(workspace.nbytes());
    IndexerTopkCuda(p);
  }

  void MoeRoute(const Tensor& logits, const Tensor& bias, const MoeRouteSpec& spec, Tensor* experts,
                Tensor* weights) override {
    MoeRoutingParams p;
    p.logits = logits.data<float>();
    p.bias = bias.empty() ? nullptr : bias.data<float>();
    p.T = logits.size(0);
    p.E = logits.size(1);
    p.n_group = spec.n_group;
    p.topk_group = spec.topk_group;
    p.topk = spec.topk;
    p.norm_topk_prob = spec.norm_topk_prob;
    p.routed_scaling_factor = spec.routed_scaling_factor;
    p.out_experts = experts->data<int32_t>();
    p.out_weights = weights->data<float>();
    MoeRoutingCuda(p, nullptr);
  }

  // The copy of the offsets is the MoE layer's one host synchronisation: the expert GEMMs take
  // their row counts from the host.
  MoeGrouping MoeGroupByExpert(const Tensor& experts, int64_t E) override {
    const int64_t n = experts.numel();
    MoeGrouping g;
    g.order = Alloc(DType::kI32, {n});
    g.inverse = Alloc(DType::kI32, {n});
    Tensor offsets = Alloc(DType::kI32, {E + 1});
    const size_t ws_bytes = MoeGroupByExpertCudaWorkspaceBytes(n, E);
    Tensor ws = Alloc(DType::kU8, {static_cast<int64_t>(ws_bytes)});
    MoeGroupByExpertCuda(experts.data<int32_t>(), n, E, g.order.data<int32_t>(), g.inverse.data<int32_t>(),
                         offsets.data<int32_t>(), ws.raw(), ws_bytes, nullptr);
    g.offsets.resize(E + 1);
    CUDA_CHECK(cudaMemcpy(g.offsets.data(), offsets.raw(), (E + 1) * sizeof(int32_t), cudaMemcpyDeviceToHost));
    return g;
  }

  void MoeGather(const Tensor& x, const Tensor& order, int64_t k, Tensor* y) override {
    MoeGatherCuda(B(x), order.data<int32_t>(), order.numel(), k, x.size(1), B(*y), nullptr);
  }

  // FP8-resident experts are dequantised into moe_scratch_, at most expert_scratch_bytes_ (1 GiB by
  // default: 12 of DeepSeek-V3.2's 88 MB experts per batch, ~1 % of an H200) but never more than
  // the layer's FP8 experts need, and never less than one expert.
  void ExpertMlps(const std::vector<BackendMlp>& experts, const Tensor& x, const std::vector<int32_t>& offsets,
                  Tensor* out) override {
    const int64_t n = x.size(0);
    if (experts.empty() || n == 0) return;
    const int64_t I = experts[0].gate.size(0);
    MoeExpertsCudaArgs args;
    int64_t total = 0, largest = 0;
    for (const BackendMlp& e : experts) {
      ExpertCuda c{Matrix(e.gate), Matrix(e.up), Matrix(e.down)};
      const int64_t need = MoeExpertScratchElements(c);
      total += need;
      largest = std::max(largest, need);
      args.experts.push_back(c);
    }
    const int64_t want = std::max(largest, std::min(total, expert_scratch_bytes_ / 2));
    if (want > 0 && (moe_scratch_.empty() || moe_scratch_.numel() < want)) moe_scratch_ = Alloc(DType::kBF16, {want});
    args.offsets = offsets;
    args.x = B(x);
    Tensor gate = Alloc(DType::kBF16, {n, I}), up = Alloc(DType::kBF16, {n, I});
    Tensor pointers = Alloc(DType::kU8, {static_cast<int64_t>(MoeExpertsCudaPointerBytes(args.experts.size()))});
    args.gate = B(gate);
    args.up = B(up);
    args.out = B(*out);
    args.dequant = want > 0 ? B(moe_scratch_) : nullptr;
    args.dequant_elements = want > 0 ? moe_scratch_.numel() : 0;
    args.pointers = pointers.raw();
    MoeExpertMlpsCuda(cublas_, args, nullptr);
  }

  void MoeCombine(const Tensor& rows, const Tensor& inverse, const Tensor& weights, Tensor* y) override {
    MoeCombineCuda(B(rows), inverse.data<int32_t>(), weights.data<float>(), weights.size(0), weights.size(1),
                   y->size(1), B(*y), nullptr);
  }

  void SetExpertScratchBytes(int64_t bytes) override {
    expert_scratch_bytes_ = bytes;
    moe_scratch_ = Tensor();
  }

  // Row-major c = op(a) op(b) is column-major c^T = op(b)^T op(a)^T: b comes first.
  void Gemm(const Tensor& a, bool ta, const Tensor& b, bool tb, float alpha, float beta, Tensor* c) override {
    const int64_t a_cols = a.numel() / a.size(0), b_cols = b.numel() / b.size(0);
    const int64_t M = ta ? a_cols : a.size(0), K = ta ? a.size(0) : a_cols, N = tb ? b.size(0) : b_cols;
    CUBLAS_CHECK(cublasGemmEx(cublas_, tb ? CUBLAS_OP_T : CUBLAS_OP_N, ta ? CUBLAS_OP_T : CUBLAS_OP_N,
                              static_cast<int>(N), static_cast<int>(M), static_cast<int>(K), &alpha, b.raw(),
                              CublasType(b.dtype()), static_cast<int>(b_cols), a.raw(), CublasType(a.dtype()),
                              static_cast<int>(a_cols), &beta, c->raw(), CublasType(c->dtype()), static_cast<int>(N),
                              CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
  }

  void LayerNormTrain(const Tensor& x, const Tensor& w, const Tensor& b, float eps, Tensor* y, Tensor* xhat,
                      Tensor* inv) override {
    const int64_t D = w.numel();
    LayerNormTrainCuda(x.data<float>(), w.data<float>(), b.data<float>(), x.numel() / D, D, eps, y->data<float>(),
                       xhat->data<float>(), inv->data<float>(), nullptr);
  }

  void LayerNormBackward(const Tensor& dy, const Tensor& xhat, const Tensor& inv, const Tensor& w, Tensor* dx,
                         Tensor* dw, Tensor* db) override {
    const int64_t D = w.numel();
    LayerNormBackwardCuda(dy.data<float>(), xhat.data<float>(), inv.data<float>(), w.data<float>(), dy.numel() / D, D,
                          dx->data<float>(), dw->data<float>(), db->data<float>(), nullptr);
  }

  std::vector<double> CrossEntropyRows(const Tensor& logits, const std::vector<int32_t>& targets) override {
    const int64_t rows = logits.size(0);
    IC_CHECK(static_cast<int64_t>(targets.size()) == rows && logits.dtype() == DType::kF32);
    std::vector<double> nll(rows);
    if (rows == 0) return nll;
    const Tensor ids = Upload(targets);
    Tensor out = Alloc(DType::kF64, {rows});
    CrossEntropyRowsCuda(logits.data<float>(), ids.data<int32_t>(), rows, logits.size(1), out.data<double>(), nullptr);
    CUDA_CHECK(cudaMemcpy(nll.data(), out.raw(), rows * sizeof(double), cudaMemcpyDeviceToHost));
    return nll;
  }

  // The fused kernel reads bf16 student q, k (converted here) and bf16 teacher activations.
  double DistillLoss(const DistillLossArgs& a) override {
    const Tensor q = Convert(a.q, DType::kBF16), k = Convert(a.k, DType::kBF16);
    DistillLossCudaParams p;
    p.q = B(q);
    p.k = B(k);
    p.w = a.w.data<float>();
    p.Tq = a.q.size(0);
    p.L = a.k.size(0);
    p.HI = a.w.size(1);
    p.D = a.k.size(1);
    p.index_scale = a.index_scale;
    p.query_offset = a.query_offset;
    IC_CHECK(a.attn_q.size() >= 1 && a.attn_q.size() <= static_cast<size_t>(kDistillMaxServed));
    p.num_served = static_cast<int>(a.attn_q.size());
    std::vector<Tensor> keep;  // bf16 copies live until the kernel is queued
    for (size_t j = 0; j < a.attn_q.size(); ++j) {
      keep.push_back(Convert(a.attn_q[j], DType::kBF16));
      keep.push_back(Convert(a.attn_kv[j], DType::kBF16));
      p.attn_q[j] = B(keep[keep.size() - 2]);
      p.attn_kv[j] = B(keep.back());
    }
    p.HA = a.attn_q[0].size(1);
    p.DA = a.attn_q[0].size(2);
    p.attn_scale = a.attn_scale;
    p.sparse = a.sparse;
    p.topk = a.topk.empty() ? nullptr : a.topk.data<int32_t>();
    p.K = a.topk.empty() ? 0 : a.topk.size(1);
    Tensor loss = Alloc(DType::kF64, {1});
    p.loss = loss.data<double>();
    p.grad_q = a.grad_q->data<float>();
    p.grad_k = a.grad_k->data<float>();
    p.grad_w = a.grad_w->data<float>();
    Tensor workspace = Alloc(DType::kU8, {static_cast<int64_t>(DistillLossCudaWorkspaceBytes(p))});
    p.workspace = workspace.raw();
    p.workspace_bytes = static_cast<size_t>(workspace.nbytes());
    DistillLossCuda(p);
    double result = 0.0;
    CUDA_CHECK(cudaMemcpy(&result, loss.raw(), sizeof(double), cudaMemcpyDeviceToHost));
    return result;
  }

 protected:
  Tensor PlainWeight(const PlacedWeight& w) override {
    if (!w.is_fp8()) return w.values;
    const int64_t rows = w.size(0), cols = w.size(1);
    ReserveFp8Scratch(rows * cols);  // a no-op for weights placed by WeightFp8
    Tensor plain = fp8_scratch_.Sub(0, {rows, cols});
    if (fp8_scratch_holds_.raw() != w.values.raw()) {
      Fp8BlockLayout layout;
      layout.rows = rows;
      layout.cols = cols;
      layout.block_rows = w.block_rows;
      layout.block_cols = w.block_cols;
      Fp8DequantCuda(static_cast<const uint8_t*>(w.values.raw()), w.scale_inv.data<float>(), layout, B(plain),
                     nullptr);
      // Holding the tensor keeps its storage alive, so no other weight can reuse the address that
      // identifies it while it is remembered (placed weights are never written again).
      fp8_scratch_holds_ = w.values;
    }
    return plain;
  }

 private:
  // A placed weight as kernels/moe_experts_cuda.h sees it.
  static ExpertMatrixCuda Matrix(const PlacedWeight& w) {
    ExpertMatrixCuda m;
    m.values = w.values.raw();
    m.scale_inv = w.is_fp8() ? w.scale_inv.data<float>() : nullptr;
    m.rows = w.size(0);
    m.cols = w.size(1);
    m.block_rows = w.block_rows;
    m.block_cols = w.block_cols;
    return m;
  }

  Tensor Upload(const std::vector<int32_t>& v) {
    Tensor t = Alloc(DType::kI32, {static_cast<int64_t>(v.size())});
    CUDA_CHECK(cudaMemcpy(t.raw(), v.data(), v.size() * sizeof(int32_t), cudaMemcpyHostToDevice));
    return t;
  }

  // The table's cos and sin on the device, uploaded once per table (a forward builds one table
  // and every layer's rope reads it).
  std::pair<Tensor, Tensor> UploadTable(const RopeTable& table) {
    using Pair = std::pair<Tensor, Tensor>;
    if (table.device.data) return *static_cast<const Pair*>(table.device.data.get());
    const int64_t half = table.rope_dim / 2;
    auto pair = std::make_shared<Pair>(Alloc(DType::kF32, {table.num_positions, half}),
                                       Alloc(DType::kF32, {table.num_positions, half}));
    CUDA_CHECK(cudaMemcpy(pair->first.raw(), table.cos.data(), pair->first.nbytes(), cudaMemcpyHostToDevice));
    CUDA_CHECK(cudaMemcpy(pair->second.raw(), table.sin.data(), pair->second.nbytes(), cudaMemcpyHostToDevice));
    table.device.data = pair;
    return *pair;
  }

  std::shared_ptr<DevicePool> pool_;
  cublasHandle_t cublas_ = nullptr;
  Tensor sum_sq_;          // f64 [1 + kSumOfSquaresWorkspace]: SumOfSquares' result and scratch
  Tensor nonfinite_flag_;  // one int32 on the device: the smallest tag noted, or >= kNoTag
  Tensor fp8_scratch_;        // bf16, as many elements as the largest FP8 weight placed
  Tensor fp8_scratch_holds_;  // the FP8 weight whose dequantised form the scratch holds, if any
  int64_t expert_scratch_bytes_ = int64_t{1} << 30;  // ExpertMlps' FP8 dequantisation budget
  Tensor moe_scratch_;                               // bf16, ExpertMlps' dequantised experts
};

}  // namespace

StatusOr<std::shared_ptr<Backend>> MakeCudaBackendOrError() {
  if (!CudaDeviceAvailable()) return Unimplemented("--device cuda: no usable CUDA device on this machine");
  // One rank per GPU: a rank started by mpirun/srun/torchrun-style launchers uses the GPU of its
  // local rank (modulo the GPUs it can see).
  for (const char* var : {"OMPI_COMM_WORLD_LOCAL_RANK", "SLURM_LOCALID", "LOCAL_RANK"}) {
    if (const char* v = std::getenv(var)) {
      int count = 0;
      CUDA_CHECK(cudaGetDeviceCount(&count));
      CUDA_CHECK(cudaSetDevice(std::atoi(v) % count));
      break;
    }
  }
  return std::shared_ptr<Backend>(std::make_shared<CudaBackend>());
}

}  // namespace indexcache
