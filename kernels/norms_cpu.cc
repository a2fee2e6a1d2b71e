#include <cmath>

#include "kernels/norms.h"

namespace indexcache {

void RmsNormCpu(const float* x, const float* weight, int64_t rows, int64_t dim, float eps, float* out,
                int64_t x_stride, int64_t out_stride) {
  if (x_stride < 0) x_stride = dim;
  if (out_stride < 0) out_stride = dim;
#pragma omp parallel for if (rows * dim > 65536)
  for (int64_t r = 0; r < rows; ++r) {
    const float* xr = x + r * x_stride;
    float* yr = out + r * out_stride;
    double sum = 0.0;  // fp64 accumulation: the reference should not be the noisy side
    for (int64_t i = 0; i < dim; ++i) sum += static_cast<double>(xr[i]) * xr[i];
    const float inv = 1.0f / std::sqrt(static_cast<float>(sum / dim) + eps);
    for (int64_t i = 0; i < dim; ++i) yr[i] = weight[i] * (xr[i] * inv);
  }
}

void LayerNormCpu(const float* x, const float* weight, const float* bias, int64_t rows, int64_t dim, float eps,
                  float* out) {
#pragma omp parallel for if (rows * dim > 65536)
  for (int64_t r = 0; r < rows; ++r) {
    const float* xr = x + r * dim;
    float* yr = out + r * dim;
    double mean = 0.0;
    for (int64_t i = 0; i < dim; ++i) mean += xr[i];
    mean /= dim;
    double var = 0.0;
    for (int64_t i = 0; i < dim; ++i) var += (xr[i] - mean) * (xr[i] - mean);
    var /= dim;
    const double inv = 1.0 / std::sqrt(var + eps);
    for (int64_t i = 0; i < dim; ++i) yr[i] = static_cast<float>((xr[i] - mean) * inv) * weight[i] + bias[i];
  }
}

}  // namespace indexcache
