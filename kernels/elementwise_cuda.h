// The small CUDA kernels of the forward: embedding, activation, residual adds, dtype conversion,
// the MLA latent, LayerNorm and MoE row gather/scatter. bf16 activations, fp32 math. (Rope has its
// own pair: kernels/rope_cuda.h beside kernels/rope.h.)
//
// Their CPU references are beside them: kernels/elementwise.h (LayerNorm included; kernels/rope.h
// and kernels/norms.h's RMSNorm for the MLA latent); kernels/elementwise_cuda_test.cc compares each
// kernel with its reference on odd shapes, model/backend_parity_test.cc compares the two
// through the backends, and kernels/elementwise_cuda_bench.cc times them.
// All launches are asynchronous on `stream`.
#pragma once

#include <cstdint>

#include <cuda_bf16.h>
#include <cuda_runtime_api.h>

namespace indexcache {

using bf16 = __nv_bfloat16;

// out[t, :] = table[tokens[t], :]      table [V, H], tokens [T] (device), out [T, H]
void EmbeddingCuda(const bf16* table, const int32_t* tokens, int64_t T, int64_t H, bf16* out, cudaStream_t stream);
// out = silu(gate) * up                 [n]
void SiluMulCuda(const bf16* gate, const bf16* up, int64_t n, bf16* out, cudaStream_t stream);
// y += x                                [n]
void AddCuda(const bf16* x, int64_t n, bf16* y, cudaStream_t stream);
// x *= s                                [n]
void ScaleCuda(float* x, int64_t n, float s, cudaStream_t stream);
void ScaleCuda(bf16* x, int64_t n, float s, cudaStream_t stream);
void Bf16ToF32Cuda(const bf16* x, int64_t n, float* y, cudaStream_t stream);
void F32ToBf16Cuda(const float* x, int64_t n, bf16* y, cudaStream_t stream);

// Training LayerNorm (fp32): y = xhat * w + b with xhat [rows, dim] and inv [rows] kept.
void LayerNormTrainCuda(const float* x, const float* w, const float* b, int64_t rows, int64_t dim, float eps, float* y,
                        float* xhat, float* inv, cudaStream_t stream);
// dx = inv * (g - mean(g) - xhat * mean(g * xhat)) with g = dy * w; dw += sum dy * xhat; db += sum dy
// (dw, db through float atomics: order-dependent at rounding level).
void LayerNormBackwardCuda(const float* dy, const float* xhat, const float* inv, const float* w, int64_t rows,
                           int64_t dim, float* dx, float* dw, float* db, cudaStream_t stream);

// latent[t] = [RmsNorm(ckv[t, :kv_lora]) * w, rope_interleaved(ckv[t, kv_lora:])]
// ckv, latent: [T, kv_lora + 2 * half]; w: [kv_lora]; cos/sin: [T, half].
void MlaLatentCuda(const bf16* ckv, const bf16* w, float eps, const float* cos, const float* sin, int64_t T,
                   int64_t kv_lora, int64_t half, bf16* latent, cudaStream_t stream);

// y = LayerNorm(x) * w + b (biased variance)   x, y: [rows, dim]; w, b: [dim]
void LayerNormCuda(const bf16* x, const bf16* w, const bf16* b, int64_t rows, int64_t dim, float eps, bf16* y,
                   cudaStream_t stream);

// y[i, :] = x[rows[i], :]                        rows [n] (device), x [*, cols], y [n, cols]
void GatherRowsCuda(const bf16* x, const int32_t* rows, int64_t n, int64_t cols, bf16* y, cudaStream_t stream);
// y[rows[i], :] += scale[i] * x[i, :]; rows must be distinct within one call.
void ScatterAddRowsCuda(const bf16* x, const int32_t* rows, const float* scale, int64_t n, int64_t cols, bf16* y,
                        cudaStream_t stream);

}  // namespace indexcache
