// RMSNorm, CPU reference (fp32 in/out); its CUDA version is kernels/norms_cuda.h. LayerNorm (inference
// and training) pairs up in kernels/elementwise.h and kernels/elementwise_cuda.h.
#pragma once

#include <cstdint>

namespace indexcache {

// out[r, :] = x[r, :] * rsqrt(mean(x[r, :]^2) + eps) * weight.  x, out: [rows, dim] (may alias).
void RmsNormCpu(const float* x, const float* weight, int64_t rows, int64_t dim, float eps, float* out,
                int64_t x_stride = -1, int64_t out_stride = -1);

}  // namespace indexcache
