// The small kernels of the forward and of the indexer's training, CPU references (fp32). Their
// CUDA versions are in kernels/elementwise_cuda.h with the same names and a Cuda suffix; both
// backends expose them as Backend operations, and model/backend_parity_test.cc compares the two
// on random inputs with odd shapes, and kernels/elementwise_cuda_test.cc compares each kernel
// with its reference directly. Rope and RMSNorm have their own headers (kernels/rope.h,
// kernels/norms.h).
#pragma once

#include <cstdint>

namespace indexcache {

// out[t, :] = table[tokens[t], :]           table [V, H], out [T, H]
void EmbeddingCpu(const float* table, const int32_t* tokens, int64_t T, int64_t H, float* out);
// out = silu(gate) * up                      [n] (out may alias gate)
void SiluMulCpu(const float* gate, const float* up, int64_t n, float* out);
// y += x; x *= s                             [n]
void AddCpu(const float* x, int64_t n, float* y);
void ScaleCpu(float* x, int64_t n, float s);

// out[r, :] = (x - mean) * rsqrt(var + eps) * weight + bias (biased variance, as torch.nn.LayerNorm;
// fp64 statistics).
void LayerNormCpu(const float* x, const float* weight, const float* bias, int64_t rows, int64_t dim, float eps,
                  float* out);

// LayerNorm for training: y = xhat * w + b, keeping xhat [rows, dim] and inv = 1/sqrt(var + eps)
// [rows] (biased variance, fp64 statistics).
void LayerNormTrainCpu(const float* x, const float* w, const float* b, int64_t rows, int64_t dim, float eps, float* y,
                       float* xhat, float* inv);
// dx = inv * (g - mean(g) - xhat * mean(g * xhat)) with g = dy * w (overwritten);
// dw += sum_rows dy * xhat; db += sum_rows dy.
void LayerNormBackwardCpu(const float* dy, const float* xhat, const float* inv, const float* w, int64_t rows,
                          int64_t dim, float* dx, float* dw, float* db);

// y[i, :] = x[rows[i], :]                     x [*, cols], y [n, cols]
void GatherRowsCpu(const float* x, const int32_t* rows, int64_t n, int64_t cols, float* y);
// y[rows[i], :] += scale[i] * x[i, :]
void ScatterAddRowsCpu(const float* x, const int32_t* rows, const float* scale, int64_t n, int64_t cols, float* y);

}  // namespace indexcache
