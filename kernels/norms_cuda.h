// Normalisations, CUDA backend (mirrors kernels/norms.h; RmsNormCpu is the reference).
#pragma once

#include <cstdint>

#include <cuda_bf16.h>
#include <cuda_runtime_api.h>

namespace indexcache {

// out[r, :] = weight * (x[r, :] * rsqrt(mean(x[r, :]^2) + eps)), accumulated in fp32.
// x, out: [rows, dim] contiguous device arrays (may alias); weight: [dim]. T = float or
// __nv_bfloat16. Asynchronous on `stream`; launch errors abort through CUDA_CHECK.
template <typename T>
void RmsNormCuda(const T* x, const T* weight, int64_t rows, int64_t dim, float eps, T* out,
                 cudaStream_t stream);

extern template void RmsNormCuda<float>(const float*, const float*, int64_t, int64_t, float, float*,
                                        cudaStream_t);
extern template void RmsNormCuda<__nv_bfloat16>(const __nv_bfloat16*, const __nv_bfloat16*, int64_t,
                                                int64_t, float, __nv_bfloat16*, cudaStream_t);

}  // namespace indexcache
