// Backend: the kernel interface the DSA forward is written against, once.
//
// CpuBackend (Eigen GEMMs + kernels/*_cpu.cc, fp32 activations) is the reference; CudaBackend
// (kernels/*.cu + cuBLAS, bf16 activations and weights, fp32 accumulation) implements the same
// operations. The CUDA backend keeps an FP8 checkpoint's matrices FP8 on the device and
// dequantises each just before the GEMM that reads it (PlacedWeight below). Tensors handed to a
// backend live on its device and are contiguous row-major unless a stride says otherwise;
// host-side index lists are plain vectors. Every operation is asynchronous with respect to the
// host except the ones returning host data (ToHost, MoeGroupByExpert's offsets, ...).
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "core/status.h"
#include "core/tensor.h"
#include "kernels/fp8_dequant.h"
#include "kernels/latent_fp8.h"
#include "kernels/rope.h"
#include "model/config.h"
#include "model/pattern.h"
#include "optim/adamw_update.h"

namespace indexcache {

// MLA head sizes, for the absorbed-form operations.
struct MlaDims {
  int64_t heads = 0, nope = 0, rope = 0, v = 0, kv_lora = 0;
  int64_t qk() const { return nope + rope; }
  int64_t latent() const { return kv_lora + rope; }
};

// A weight matrix placed on a backend: `values` in the backend's weight dtype (f32 on the CPU,
// bf16 on CUDA), or, on a backend that keeps FP8 checkpoints resident (CUDA), `values` F8_E4M3
// [rows, cols] with fp32 block scales beside it: half the bytes of bf16. Operations that take a
// PlacedWeight dequantise an FP8 one just in time into a bf16 scratch the backend owns, sized for
// the largest FP8 matrix placed and reused by every call (work is stream-ordered, so one GEMM has
// read the scratch before the next dequantisation overwrites it). Immutable once placed.
struct PlacedWeight {
  Tensor values;
  Tensor scale_inv;  // f32 [ceil(rows / block_rows), ceil(cols / block_cols)]; empty unless FP8
  int64_t block_rows = 0, block_cols = 0;
  bool is_fp8() const { return values.dtype() == DType::kF8E4M3 && !values.empty(); }
  bool empty() const { return values.empty(); }
  int64_t size(int64_t axis) const { return values.size(axis); }
  const Shape& shape() const { return values.shape(); }
  int64_t nbytes() const { return values.nbytes() + (scale_inv.empty() ? 0 : scale_inv.nbytes()); }
};

// The distillation loss's operands as backend tensors (kernels/distill_loss.h has the math).
struct DistillLossArgs {
  Tensor q, k, w;                    // student [T, HI, D], [L, D], [T, HI] (f32; rope applied)
  std::vector<Tensor> attn_q;        // per served layer [T, HA, DA]
  std::vector<Tensor> attn_kv;       // per served layer [L, DA]
  float index_scale = 1.0f, attn_scale = 1.0f;
  int64_t query_offset = 0;
  bool sparse = false;
  Tensor topk;                       // [T, K] int32 (sparse mode)
  Tensor* grad_q = nullptr;          // f32, ACCUMULATED into
  Tensor* grad_k = nullptr;
  Tensor* grad_w = nullptr;
};

// One MLP's matrices (dense layers, shared and routed experts): down(silu(gate x) * up x).
struct BackendMlp {
  PlacedWeight gate, up, down;
};

// MoE routing of T tokens on the host: MoeRouteOnHost's result (the test oracle of MoeRoute).
struct MoeRouting {
  std::vector<int32_t> experts;  // [T, k]
  std::vector<float> weights;    // [T, k]
};

struct MoeRouteSpec {
  int64_t n_group = 1, topk_group = 1, topk = 1;
  bool norm_topk_prob = true;
  float routed_scaling_factor = 1.0f;
};

// The T * k routing assignments (a = t * k + j) grouped by expert, stably (kernels/moe_dispatch.h).
struct MoeGrouping {
  Tensor order;                  // int32 [T * k] on the backend: position -> assignment
  Tensor inverse;                // int32 [T * k] on the backend: assignment -> position
  std::vector<int32_t> offsets;  // [E + 1] on the HOST: expert e owns positions [offsets[e], offsets[e + 1])
};

class Backend {
 public:
  virtual ~Backend() = default;
  virtual const char* name() const = 0;
  virtual Device device() const = 0;
  virtual DType activation_dtype() const = 0;

  // --- what this backend supports ---------------------------------------------------------------
  // Whether every kernel the forward uses supports the model's sizes. DsaModel checks this when a
  // model loads, so that an unsupported checkpoint is one error naming the config field, never an
  // abort inside a kernel. The CPU reference supports everything.
  virtual Status SupportsModel(const ModelConfig& /*config*/) const { return Status::Ok(); }
  // The same for distillation training under `pattern` (checked when training starts).
  virtual Status SupportsTraining(const ModelConfig& /*config*/, const IndexPattern& /*pattern*/,
                                  bool /*sparse*/) const {
    return Status::Ok();
  }

  // --- memory ---------------------------------------------------------------------------------
  virtual Tensor Alloc(DType dtype, Shape shape) = 0;  // zero-filled
  // A weight from host fp32 data in the backend's weight dtype (CPU: f32, borrowing `data`, which
  // must outlive the tensor; CUDA: a bf16 copy).
  virtual Tensor Weight(const float* data, Shape shape) = 0;
  // A weight kept in fp32 on every backend (MoE router, indexer head weights: transformers keeps
  // these in fp32 too).
  virtual Tensor WeightF32(const float* data, Shape shape) = 0;
  // Whether FP8 checkpoint matrices stay FP8 here (CUDA) rather than being dequantised to the
  // weight dtype at load (CPU). DsaModel::Load asks, and loads with Fp8Weights::kKeep when so.
  virtual bool KeepsFp8Weights() const { return false; }
  // A weight matrix from a checkpoint's FP8 form: `fp8` F8_E4M3 [rows, cols] and `scale_inv` f32
  // block scales, both host tensors (read, not kept). CUDA copies both to the device as they are;
  // the CPU dequantises to f32 (kernels/fp8_dequant.h). Shapes are checked first: an error names
  // `name`, the checkpoint tensor.
  virtual StatusOr<PlacedWeight> WeightFp8(const std::string& name, const Tensor& fp8, const Tensor& scale_inv,
                                           int64_t block_rows, int64_t block_cols) = 0;
  // Sizes the bf16 scratch that FP8-resident weights are dequantised into for matrices of up to
  // `elements` (it only grows; WeightFp8 grows it too). PlaceWeights calls this once with the
  // largest FP8 matrix before the first upload, so no outgrown scratch is left in a memory pool.
  virtual void ReserveFp8Scratch(int64_t /*elements*/) {}
  // Bytes of that scratch (0 if none).
  virtual int64_t Fp8ScratchBytes() const { return 0; }
  virtual Tensor ToDevice(const Tensor& host) = 0;  // same dtype
  virtual Tensor ToHost(const Tensor& t) = 0;       // float types arrive as f32, ints unchanged
  virtual void Synchronize() {}
  // Free bytes of device memory now; -1 for the host backend (no device to fill).
  virtual int64_t FreeDeviceBytes() { return -1; }
  // A copy of x converted to `dtype` (float types only); x itself if it already has it.
  virtual Tensor Convert(const Tensor& x, DType dtype) = 0;

  // --- non-finite detection -----------------------------------------------------------------------
  // The forward notes its per-layer activations here and reads the result once at its end, so a
  // NaN or Inf anywhere is an error naming the first layer that produced one (and kernels that
  // would drop NaN scores cannot launder it into finite wrong output). Cheap: one scan per noted
  // tensor, queued without a host round trip.
  // Clears the record (asynchronous).
  virtual void ResetNonFinite() = 0;
  // Records `tag` if the float tensor x holds a NaN or an Inf (asynchronous).
  virtual void NoteNonFinite(const Tensor& x, int32_t tag) = 0;
  // The smallest tag recorded since the last reset, or -1 for none; synchronises with the host.
  virtual int32_t FirstNonFinite() = 0;

  // dst[dst_row + i, :] = src[i, :] (decode caches).
  virtual void CopyRows(const Tensor& src, int64_t dst_row, Tensor* dst) = 0;
  // dst[rows[i], :] = src[i, :] for the n rows of src (same dtype and row size); rows: int32 [n]
  // on this backend, distinct and in range. A batched decode step's new rows into pooled caches.
  virtual void ScatterRows(const Tensor& src, const Tensor& rows, Tensor* dst) = 0;
  // indices[t, j] += offsets[t] wherever indices[t, j] >= 0 (the -1 padding stays -1); indices
  // int32 [T, k] and offsets int32 [T], both on this backend: each request's top-k, relative to its
  // own keys, made into rows of a pooled latent buffer (kernels/batched_decode.h).
  virtual void OffsetIndices(const Tensor& offsets, Tensor* indices) = 0;
  // The FP8 latent cache (kernels/latent_fp8.h): cache [pool_rows, layout.row_bytes()] kU8.
  // cache[rows[i]] = Quantise(src[i]) for the n rows of src [n, layout.dim()] (activation dtype);
  // rows int32 [n] on this backend, distinct and in range.
  virtual void QuantizeLatentRows(const Tensor& src, const Tensor& rows, const LatentFp8Layout& layout,
                                  Tensor* cache) = 0;
  // out[i] = Dequantise(cache[indices[i]]) (zeros for -1) for the n = indices.numel() entries of
  // indices (int32, any shape, on this backend); out [n, layout.dim()] activation dtype.
  virtual void DequantizeLatentRows(const Tensor& cache, const Tensor& indices, const LatentFp8Layout& layout,
                                    Tensor* out) = 0;
  // indices [T, k] int32: entry (t, j) >= 0 becomes t * k + j (its row in a gather of the whole
  // top-k), -1 stays.
  virtual void CompactIndices(Tensor* indices) = 0;

  // --- dense math -----------------------------------------------------------------------------
  // y[t] = table[tokens[t]]; tokens already validated.
  virtual void Embedding(const Tensor& table, const std::vector<int32_t>& tokens, Tensor* y) = 0;
  // y[M, N] = x[M, K] w[N, K]^T, or y += when accumulate.
  virtual void Linear(const Tensor& x, const Tensor& w, Tensor* y, bool accumulate = false) = 0;
  // The same with a placed weight (an FP8-resident one is dequantised just in time).
  void Linear(const Tensor& x, const PlacedWeight& w, Tensor* y, bool accumulate = false) {
    Linear(x, PlainWeight(w), y, accumulate);
  }
  virtual void RmsNorm(const Tensor& x, const Tensor& w, float eps, Tensor* y) = 0;
  virtual void LayerNorm(const Tensor& x, const Tensor& w, const Tensor& b, float eps, Tensor* y) = 0;
  // y = silu(gate) * up, elementwise.
  virtual void SiluMul(const Tensor& gate, const Tensor& up, Tensor* y) = 0;
  // y += x.
  virtual void Add(const Tensor& x, Tensor* y) = 0;
  virtual void Scale(Tensor* x, float s) = 0;

  // --- rope -----------------------------------------------------------------------------------
  // Rotates x[t, h, offset : offset + table.rope_dim] in place (row t uses table position t):
  // interleaved pairs or half-split. x is [T, heads, head_stride] viewed flat.
  virtual void Rope(const RopeTable& table, bool interleaved, int64_t heads, int64_t head_stride, int64_t offset,
                    Tensor* x) = 0;

  // --- MLA ------------------------------------------------------------------------------------
  // latent[T, kv_lora + rope] = [RmsNorm(ckv[:, :kv_lora], w), rope_interleaved(ckv[:, kv_lora:])]
  virtual void MlaLatent(const Tensor& ckv, const Tensor& kv_norm, float eps, const RopeTable& table,
                         const MlaDims& d, Tensor* latent) = 0;
  // q_abs[T, heads, kv_lora + rope] = [q_nope[h] W_uk[h], q_rope[h]], where q is [T, heads, nope + rope]
  // and W_uk[h] = kv_b[h * (nope + v) : h * (nope + v) + nope, :] ([nope, kv_lora]).
  virtual void AbsorbQuery(const Tensor& q, const Tensor& kv_b, const MlaDims& d, Tensor* q_abs) = 0;
  // out[T, heads * v]: out[:, h] = out_lat[:, h, :] W_uv[h]^T, W_uv[h] = kv_b rows h*(nope+v)+nope .. +v.
  virtual void AbsorbValue(const Tensor& out_lat, const Tensor& kv_b, const MlaDims& d, Tensor* out) = 0;
  // The same with a placed kv_b (an FP8-resident one is dequantised whole: the per-head strided
  // GEMMs read it in place, so it needs the plain layout, not a different one).
  void AbsorbQuery(const Tensor& q, const PlacedWeight& kv_b, const MlaDims& d, Tensor* q_abs) {
    AbsorbQuery(q, PlainWeight(kv_b), d, q_abs);
  }
  void AbsorbValue(const Tensor& out_lat, const PlacedWeight& kv_b, const MlaDims& d, Tensor* out) {
    AbsorbValue(out_lat, PlainWeight(kv_b), d, out);
  }
  // kernels/sparse_mla.h on this device: out_lat [T, heads, kv_lora], lse [T, heads] f32.
  virtual void SparseMla(const Tensor& q_abs, const Tensor& latent, const Tensor& indices, const MlaDims& d,
                         float scale, Tensor* out_lat, Tensor* lse) = 0;

  // SparseMla over an FP8 latent cache [pool_rows, layout.row_bytes()] kU8 (BatchedKvCache with
  // fp8_latents): by definition the SparseMla of the rows `indices` selects, dequantised
  // (DequantizeLatentRows, then CompactIndices), which is what this default runs. The CUDA backend
  // reads the cache in place instead at V3.2's sizes (the same bits) unless
  // set_fused_fp8_latents(false), which benchmarks use to compare the two.
  virtual void SparseMlaFp8Cache(const Tensor& q_abs, const Tensor& cache, const LatentFp8Layout& layout,
                                 const Tensor& indices, const MlaDims& d, float scale, Tensor* out_lat, Tensor* lse) {
    Tensor gathered = Alloc(q_abs.dtype(), {indices.numel(), layout.dim()});
    DequantizeLatentRows(cache, indices, layout, &gathered);
    Tensor compact = Alloc(DType::kI32, {indices.size(0), indices.size(1)});
    CopyRows(indices, 0, &compact);
    CompactIndices(&compact);
    SparseMla(q_abs, gathered, compact, d, scale, out_lat, lse);
  }
  void set_fused_fp8_latents(bool on) { fused_fp8_latents_ = on; }
  bool fused_fp8_latents() const { return fused_fp8_latents_; }

  // --- indexer --------------------------------------------------------------------------------
  // The FP8 indexer (as DeepSeek's production one): when on, an IndexerTopk call that
  // UsesFp8Indexer admits scores e4m3 q (one fp32 scale per token and head) against e4m3 k (one per
  // key), kernels/fp8_quant.h's rows, instead of bf16. Both backends apply the same rule (the CPU
  // dequantises and runs its reference), so they stay comparable. Off by default.
  void set_indexer_fp8(bool on) { indexer_fp8_ = on; }
  bool indexer_fp8() const { return indexer_fp8_; }
  // Prefill-sized calls of the DeepSeek indexer shape only: the FP8 kernel has D = 128, H <= 64 and
  // the query-block path alone (a decode step's few queries keep the bf16 split-keys path).
  static constexpr int64_t kFp8IndexerMinQueries = 65;
  bool UsesFp8Indexer(int64_t T, int64_t H, int64_t D) const {
    return indexer_fp8_ && T >= kFp8IndexerMinQueries && D == 128 && H <= 64;
  }

  // kernels/indexer_topk.h on this device, causal from query_offset: q [T, H, D], k [L, D],
  // weights [T, H] f32; indices [T, topk] int32.
  virtual void IndexerTopk(const Tensor& q, const Tensor& k, const Tensor& weights, int64_t topk,
                           int64_t query_offset, float scale, Tensor* indices) = 0;

  // The indexer of a decode batch, one query per request against that request's own keys: for each
  // i in [0, B), indices[i, :] = the top-k of q[i] over the rows [key_begin[i], key_begin[i] +
  // key_count[i]) of `keys`, causal with the query the last of them (query_offset key_count[i] - 1),
  // as indices relative to key_begin[i] (-1 padding). q [B, H, D], weights [B, H] f32, indices
  // [B, topk] int32. The default is a loop of IndexerTopk calls; CUDA runs the whole batch as one
  // launch with a key range per query (the same per-request bits).
  virtual void IndexerTopkRequests(const Tensor& q, const Tensor& keys, const Tensor& weights, int64_t topk,
                                   const std::vector<int64_t>& key_begin, const std::vector<int64_t>& key_count,
                                   float scale, Tensor* indices) {
    for (int64_t i = 0; i < q.size(0); ++i) {
      Tensor out = indices->Slice0(i, i + 1);
      IndexerTopk(q.Slice0(i, i + 1), keys.Slice0(key_begin[i], key_begin[i] + key_count[i]), weights.Slice0(i, i + 1),
                  topk, key_count[i] - 1, scale, &out);
    }
  }

  // --- MoE (model/moe_block.cc runs the block over these) ------------------------------------
  // Routes router logits [T, E] (f32) with the correction bias [E] (f32) into experts [T, k] int32
  // and weights [T, k] f32, both on this backend (kernels/moe_routing.h; no host copy).
  virtual void MoeRoute(const Tensor& logits, const Tensor& bias, const MoeRouteSpec& spec, Tensor* experts,
                        Tensor* weights) = 0;
  // Groups the assignments of experts [T, k] by expert over E experts. The offsets come back to the
  // host: that copy of E + 1 integers is the MoE layer's one synchronisation, which the grouped
  // expert GEMMs need for their sizes.
  virtual MoeGrouping MoeGroupByExpert(const Tensor& experts, int64_t E) = 0;
  // y[i] = x[order[i] / k] for the T * k rows of y (the permuted buffer).
  virtual void MoeGather(const Tensor& x, const Tensor& order, int64_t k, Tensor* y) = 0;
  // out[offsets[e] .. offsets[e + 1]) = MLP of experts[e] over the same rows of x, for every
  // expert with rows (written, not accumulated). CPU: a loop of Linear calls (the reference);
  // CUDA: grouped cuBLAS GEMMs, FP8 experts dequantised in batches (kernels/moe_experts_cuda.h).
  virtual void ExpertMlps(const std::vector<BackendMlp>& experts, const Tensor& x, const std::vector<int32_t>& offsets,
                          Tensor* out) = 0;
  // y[t] += sum_j weights[t, j] rows[inverse[t * k + j]], summed in fp32 in j order without atomics:
  // the same bits on every run (kernels/moe_dispatch.h).
  virtual void MoeCombine(const Tensor& rows, const Tensor& inverse, const Tensor& weights, Tensor* y) = 0;
  // Bytes of bf16 scratch ExpertMlps may use to dequantise FP8-resident experts (a tuning and test
  // knob; CUDA's default is 1 GiB). Backends without FP8-resident weights ignore it.
  virtual void SetExpertScratchBytes(int64_t /*bytes*/) {}
  // --- training ---------------------------------------------------------------------------------
  // c = alpha * op(a) op(b) + beta * c for 2-D row-major a, b, c (op transposes when the flag is set).
  virtual void Gemm(const Tensor& a, bool trans_a, const Tensor& b, bool trans_b, float alpha, float beta,
                    Tensor* c) = 0;
  // LayerNorm keeping what its backward needs (f32): xhat [rows, dim], inv = 1/sqrt(var + eps) [rows].
  virtual void LayerNormTrain(const Tensor& x, const Tensor& w, const Tensor& b, float eps, Tensor* y, Tensor* xhat,
                              Tensor* inv) = 0;
  // dx = LayerNorm'(dy) (overwritten); dw += sum_rows dy * xhat; db += sum_rows dy. f32.
  virtual void LayerNormBackward(const Tensor& dy, const Tensor& xhat, const Tensor& inv, const Tensor& w, Tensor* dx,
                                 Tensor* dw, Tensor* db) = 0;
  // Adds the gradients into args.grad_*; returns the loss (sum over queries of the multi-layer KL).
  virtual double DistillLoss(const DistillLossArgs& args) = 0;

  // --- language-model loss ----------------------------------------------------------------------
  // Per row r of logits [R, V] (f32): -log softmax(logits[r])[targets[r]], returned on the host in
  // fp64 (kernels/cross_entropy.h). Targets are in [0, V) (the caller's invariant).
  virtual std::vector<double> CrossEntropyRows(const Tensor& logits, const std::vector<int32_t>& targets) = 0;

  // --- optimizer step on the backend (trainer/resident_optimizer.h); f32 buffers ------------------
  // sum(x[i]^2) in fp64, returned on the host: optim/clip.h's SumOfSquares on the CPU, a
  // deterministic two-pass reduction on CUDA (optim/clip_cuda.h). Not finite iff x is not.
  virtual double SumOfSquares(const Tensor& x) = 0;
  // One AdamW step over p, m, v (updated in place) with gradient g, all f32 of one size
  // (optim/adamw_update.h: the same element arithmetic on both backends).
  virtual void AdamWUpdate(Tensor* p, Tensor* m, Tensor* v, const Tensor& g, const AdamWScalars& s) = 0;

 protected:
  bool indexer_fp8_ = false;
  bool fused_fp8_latents_ = true;

  // w as a plain tensor in the weight dtype: w.values, or for an FP8-resident w a view of the
  // dequantisation scratch, valid only until the next PlainWeight call (so only as the operand of
  // the one operation it is passed to). Backends without FP8-resident weights never see one.
  virtual Tensor PlainWeight(const PlacedWeight& w) {
    IC_CHECK(!w.is_fp8());
    return w.values;
  }
};

// Routing of host fp32 logits [T, E] with the CPU reference (kernels/moe_routing.h): the CPU
// backend's MoeRoute, and the oracle tests compare the device routing with.
MoeRouting MoeRouteOnHost(const float* logits, const float* bias, int64_t T, int64_t E, const MoeRouteSpec& spec);

// The checks every backend's WeightFp8 makes before it reads a byte: `fp8` is contiguous host
// F8_E4M3, `scale_inv` contiguous host F32, and the shapes agree (Fp8BlockLayoutOf). Errors are
// one line naming `name`.
StatusOr<Fp8BlockLayout> CheckFp8Weight(const std::string& name, const Tensor& fp8, const Tensor& scale_inv,
                                        int64_t block_rows, int64_t block_cols);

std::unique_ptr<Backend> MakeCpuBackend();
// The CUDA backend on the current device, or an error when there is no usable GPU.
StatusOr<std::shared_ptr<Backend>> MakeCudaBackendOrError();

}  // namespace indexcache
