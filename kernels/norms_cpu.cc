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

}  // namespace indexcache
