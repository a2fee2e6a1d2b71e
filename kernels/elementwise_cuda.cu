#include "kernels/elementwise_cuda.h"

#include <algorithm>

#include "core/cuda_check.h"

namespace indexcache {

namespace {

constexpr int kThreads = 256;

int Blocks(int64_t n) { return static_cast<int>(std::min<int64_t>((n + kThreads - 1) / kThreads, 1 << 20)); }

// Grid-stride loops: any n with a bounded grid.
__global__ void EmbeddingKernel(const bf16* table, const int32_t* tokens, int64_t T, int64_t H, bf16* out) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < T * H; i += int64_t(gridDim.x) * blockDim.x) {
    const int64_t t = i / H, c = i % H;
    out[i] = table[int64_t(tokens[t]) * H + c];
  }
}

__global__ void SiluMulKernel(const bf16* gate, const bf16* up, int64_t n, bf16* out) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x) {
    const float g = __bfloat162float(gate[i]);
    out[i] = __float2bfloat16(g / (1.0f + expf(-g)) * __bfloat162float(up[i]));
  }
}

__global__ void AddKernel(const bf16* x, int64_t n, bf16* y) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x) {
    y[i] = __float2bfloat16(__bfloat162float(y[i]) + __bfloat162float(x[i]));
  }
}

template <typename T>
__global__ void ScaleKernel(T* x, int64_t n, float s) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x) {
    x[i] = static_cast<T>(static_cast<float>(x[i]) * s);
  }
}

__global__ void Bf16ToF32Kernel(const bf16* x, int64_t n, float* y) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x) {
    y[i] = __bfloat162float(x[i]);
  }
}

__global__ void F32ToBf16Kernel(const float* x, int64_t n, bf16* y) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x) {
    y[i] = __float2bfloat16(x[i]);
  }
}

// Block-wide sum for blockDim.x == kThreads.
__device__ float BlockSum(float v) {
  __shared__ float partial[kThreads / 32];
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  if ((threadIdx.x & 31) == 0) partial[threadIdx.x >> 5] = v;
  __syncthreads();
  float total = 0.0f;
  for (int w = 0; w < kThreads / 32; ++w) total += partial[w];
  __syncthreads();  // partial is reused by the next call
  return total;
}

// One block per row.
__global__ void MlaLatentKernel(const bf16* ckv, const bf16* w, float eps, const float* cos, const float* sin,
                                int64_t kv_lora, int64_t half, bf16* latent) {
  const int64_t t = blockIdx.x, width = kv_lora + 2 * half;
  const bf16* in = ckv + t * width;
  bf16* out = latent + t * width;
  float ss = 0.0f;
  for (int64_t i = threadIdx.x; i < kv_lora; i += blockDim.x) {
    const float v = __bfloat162float(in[i]);
    ss += v * v;
  }
  const float inv = rsqrtf(BlockSum(ss) / static_cast<float>(kv_lora) + eps);
  for (int64_t i = threadIdx.x; i < kv_lora; i += blockDim.x) {
    out[i] = __float2bfloat16(__bfloat162float(w[i]) * (__bfloat162float(in[i]) * inv));
  }
  for (int64_t i = threadIdx.x; i < half; i += blockDim.x) {
    const float a = __bfloat162float(in[kv_lora + 2 * i]), b = __bfloat162float(in[kv_lora + 2 * i + 1]);
    const float c = cos[t * half + i], s = sin[t * half + i];
    out[kv_lora + 2 * i] = __float2bfloat16(a * c - b * s);
    out[kv_lora + 2 * i + 1] = __float2bfloat16(b * c + a * s);
  }
}

__global__ void LayerNormKernel(const bf16* x, const bf16* w, const bf16* b, int64_t dim, float eps, bf16* y) {
  const bf16* in = x + blockIdx.x * dim;
  bf16* out = y + blockIdx.x * dim;
  float sum = 0.0f;
  for (int64_t i = threadIdx.x; i < dim; i += blockDim.x) sum += __bfloat162float(in[i]);
  const float mean = BlockSum(sum) / static_cast<float>(dim);
  float var = 0.0f;
  for (int64_t i = threadIdx.x; i < dim; i += blockDim.x) {
    const float d = __bfloat162float(in[i]) - mean;
    var += d * d;
  }
  const float inv = rsqrtf(BlockSum(var) / static_cast<float>(dim) + eps);
  for (int64_t i = threadIdx.x; i < dim; i += blockDim.x) {
    out[i] = __float2bfloat16((__bfloat162float(in[i]) - mean) * inv * __bfloat162float(w[i]) + __bfloat162float(b[i]));
  }
}

__global__ void LayerNormTrainKernel(const float* x, const float* w, const float* b, int64_t dim, float eps, float* y,
                                     float* xhat, float* inv) {
  const float* in = x + blockIdx.x * dim;
  float sum = 0.0f;
  for (int64_t i = threadIdx.x; i < dim; i += blockDim.x) sum += in[i];
  const float mean = BlockSum(sum) / static_cast<float>(dim);
  float var = 0.0f;
  for (int64_t i = threadIdx.x; i < dim; i += blockDim.x) var += (in[i] - mean) * (in[i] - mean);
  const float iv = rsqrtf(BlockSum(var) / static_cast<float>(dim) + eps);
  if (threadIdx.x == 0) inv[blockIdx.x] = iv;
  for (int64_t i = threadIdx.x; i < dim; i += blockDim.x) {
    const float h = (in[i] - mean) * iv;
    xhat[blockIdx.x * dim + i] = h;
    y[blockIdx.x * dim + i] = h * w[i] + b[i];
  }
}

__global__ void LayerNormBackwardKernel(const float* dy, const float* xhat, const float* inv, const float* w,
                                        int64_t dim, float* dx, float* dw, float* db) {
  const int64_t r = blockIdx.x;
  const float* g = dy + r * dim;
  const float* h = xhat + r * dim;
  float sg = 0.0f, sgh = 0.0f;
  for (int64_t i = threadIdx.x; i < dim; i += blockDim.x) {
    const float gx = g[i] * w[i];
    sg += gx;
    sgh += gx * h[i];
    atomicAdd(dw + i, g[i] * h[i]);
    atomicAdd(db + i, g[i]);
  }
  const float mean_g = BlockSum(sg) / static_cast<float>(dim);
  const float mean_gh = BlockSum(sgh) / static_cast<float>(dim);
  for (int64_t i = threadIdx.x; i < dim; i += blockDim.x) {
    dx[r * dim + i] = inv[r] * (g[i] * w[i] - mean_g - h[i] * mean_gh);
  }
}

__global__ void GatherRowsKernel(const bf16* x, const int32_t* rows, int64_t n, int64_t cols, bf16* y) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n * cols; i += int64_t(gridDim.x) * blockDim.x) {
    y[i] = x[int64_t(rows[i / cols]) * cols + i % cols];
  }
}

__global__ void ScatterAddRowsKernel(const bf16* x, const int32_t* rows, const float* scale, int64_t n, int64_t cols,
                                     bf16* y) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n * cols; i += int64_t(gridDim.x) * blockDim.x) {
    const int64_t r = i / cols;
    bf16* dst = y + int64_t(rows[r]) * cols + i % cols;
    *dst = __float2bfloat16(__bfloat162float(*dst) + scale[r] * __bfloat162float(x[i]));
  }
}

}  // namespace

void EmbeddingCuda(const bf16* table, const int32_t* tokens, int64_t T, int64_t H, bf16* out, cudaStream_t stream) {
  EmbeddingKernel<<<Blocks(T * H), kThreads, 0, stream>>>(table, tokens, T, H, out);
  CUDA_CHECK(cudaGetLastError());
}

void SiluMulCuda(const bf16* gate, const bf16* up, int64_t n, bf16* out, cudaStream_t stream) {
  SiluMulKernel<<<Blocks(n), kThreads, 0, stream>>>(gate, up, n, out);
  CUDA_CHECK(cudaGetLastError());
}

void AddCuda(const bf16* x, int64_t n, bf16* y, cudaStream_t stream) {
  AddKernel<<<Blocks(n), kThreads, 0, stream>>>(x, n, y);
  CUDA_CHECK(cudaGetLastError());
}

void ScaleCuda(float* x, int64_t n, float s, cudaStream_t stream) {
  ScaleKernel<float><<<Blocks(n), kThreads, 0, stream>>>(x, n, s);
  CUDA_CHECK(cudaGetLastError());
}

void ScaleCuda(bf16* x, int64_t n, float s, cudaStream_t stream) {
  ScaleKernel<bf16><<<Blocks(n), kThreads, 0, stream>>>(x, n, s);
  CUDA_CHECK(cudaGetLastError());
}

void Bf16ToF32Cuda(const bf16* x, int64_t n, float* y, cudaStream_t stream) {
  Bf16ToF32Kernel<<<Blocks(n), kThreads, 0, stream>>>(x, n, y);
  CUDA_CHECK(cudaGetLastError());
}

void F32ToBf16Cuda(const float* x, int64_t n, bf16* y, cudaStream_t stream) {
  F32ToBf16Kernel<<<Blocks(n), kThreads, 0, stream>>>(x, n, y);
  CUDA_CHECK(cudaGetLastError());
}

void LayerNormTrainCuda(const float* x, const float* w, const float* b, int64_t rows, int64_t dim, float eps, float* y,
                        float* xhat, float* inv, cudaStream_t stream) {
  if (rows == 0) return;
  LayerNormTrainKernel<<<static_cast<unsigned>(rows), kThreads, 0, stream>>>(x, w, b, dim, eps, y, xhat, inv);
  CUDA_CHECK(cudaGetLastError());
}

void LayerNormBackwardCuda(const float* dy, const float* xhat, const float* inv, const float* w, int64_t rows,
                           int64_t dim, float* dx, float* dw, float* db, cudaStream_t stream) {
  if (rows == 0) return;
  LayerNormBackwardKernel<<<static_cast<unsigned>(rows), kThreads, 0, stream>>>(dy, xhat, inv, w, dim, dx, dw, db);
  CUDA_CHECK(cudaGetLastError());
}

void MlaLatentCuda(const bf16* ckv, const bf16* w, float eps, const float* cos, const float* sin, int64_t T,
                   int64_t kv_lora, int64_t half, bf16* latent, cudaStream_t stream) {
  if (T == 0) return;
  MlaLatentKernel<<<static_cast<unsigned>(T), kThreads, 0, stream>>>(ckv, w, eps, cos, sin, kv_lora, half, latent);
  CUDA_CHECK(cudaGetLastError());
}

void LayerNormCuda(const bf16* x, const bf16* w, const bf16* b, int64_t rows, int64_t dim, float eps, bf16* y,
                   cudaStream_t stream) {
  if (rows == 0) return;
  LayerNormKernel<<<static_cast<unsigned>(rows), kThreads, 0, stream>>>(x, w, b, dim, eps, y);
  CUDA_CHECK(cudaGetLastError());
}

void GatherRowsCuda(const bf16* x, const int32_t* rows, int64_t n, int64_t cols, bf16* y, cudaStream_t stream) {
  GatherRowsKernel<<<Blocks(n * cols), kThreads, 0, stream>>>(x, rows, n, cols, y);
  CUDA_CHECK(cudaGetLastError());
}

void ScatterAddRowsCuda(const bf16* x, const int32_t* rows, const float* scale, int64_t n, int64_t cols, bf16* y,
                        cudaStream_t stream) {
  ScatterAddRowsKernel<<<Blocks(n * cols), kThreads, 0, stream>>>(x, rows, scale, n, cols, y);
  CUDA_CHECK(cudaGetLastError());
}

}  // namespace indexcache
