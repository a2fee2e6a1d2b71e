// Normalisations, CPU reference (fp32 in/out; the CUDA backend mirrors these signatures).
#pragma once

#include <cstdint>

namespace indexcache {

// out[r, :] = x[r, :] * rsqrt(mean(x[r, :]^2) + eps) * weight.  x, out: [rows, dim] (may alias).
void RmsNormCpu(const float* x, const float* weight, int64_t rows, int64_t dim, float eps, float* out,
                int64_t x_stride = -1, int64_t out_stride = -1);

// out[r, :] = (x - mean) * rsqrt(var + eps) * weight + bias (biased variance, as torch.nn.LayerNorm).
void LayerNormCpu(const float* x, const float* weight, const float* bias, int64_t rows, int64_t dim, float eps,
                  float* out);

}  // namespace indexcache
