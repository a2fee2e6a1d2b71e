// Fused AdamW: one thread per 4 elements (float4) when the pointers allow, else per element; the
// element arithmetic is AdamWElement from optim/adamw_update.h, as on the CPU.
#include "optim/adamw_cuda.h"

#include <cstdint>

#include "core/cuda_check.h"

namespace indexcache {
namespace {

constexpr int kThreads = 256;

__global__ void AdamWVec4Kernel(float4* __restrict__ p, float4* __restrict__ m, float4* __restrict__ v,
                                const float4* __restrict__ g, int64_t n4, AdamWScalars s) {
  const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= n4) return;
  float4 pp = p[i], mm = m[i], vv = v[i];
  const float4 gg = g[i];
  AdamWElement(pp.x, mm.x, vv.x, gg.x, s);
  AdamWElement(pp.y, mm.y, vv.y, gg.y, s);
  AdamWElement(pp.z, mm.z, vv.z, gg.z, s);
  AdamWElement(pp.w, mm.w, vv.w, gg.w, s);
  p[i] = pp;
  m[i] = mm;
  v[i] = vv;
}

__global__ void AdamWScalarKernel(float* __restrict__ p, float* __restrict__ m, float* __restrict__ v,
                                  const float* __restrict__ g, int64_t n, AdamWScalars s) {
  const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= n) return;
  float pp = p[i], mm = m[i], vv = v[i];
  AdamWElement(pp, mm, vv, g[i], s);
  p[i] = pp;
  m[i] = mm;
  v[i] = vv;
}

bool Aligned16(const void* ptr) { return reinterpret_cast<uintptr_t>(ptr) % 16 == 0; }

unsigned Blocks(int64_t work) { return static_cast<unsigned>((work + kThreads - 1) / kThreads); }

}  // namespace

void AdamWUpdateCuda(float* param, float* exp_avg, float* exp_avg_sq, const float* grad, int64_t n,
                     const AdamWScalars& s, cudaStream_t stream) {
  if (n <= 0) return;
  int64_t done = 0;
  if (Aligned16(param) && Aligned16(exp_avg) && Aligned16(exp_avg_sq) && Aligned16(grad)) {
    const int64_t n4 = n / 4;
    if (n4 > 0) {
      AdamWVec4Kernel<<<Blocks(n4), kThreads, 0, stream>>>(
          reinterpret_cast<float4*>(param), reinterpret_cast<float4*>(exp_avg),
          reinterpret_cast<float4*>(exp_avg_sq), reinterpret_cast<const float4*>(grad), n4, s);
      CUDA_CHECK(cudaGetLastError());
      done = n4 * 4;
    }
  }
  if (done < n) {
    AdamWScalarKernel<<<Blocks(n - done), kThreads, 0, stream>>>(param + done, exp_avg + done, exp_avg_sq + done,
                                                                 grad + done, n - done, s);
    CUDA_CHECK(cudaGetLastError());
  }
}

}  // namespace indexcache
