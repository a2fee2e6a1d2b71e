#include <cmath>
#include <cstring>

#include "kernels/elementwise.h"

namespace indexcache {

void EmbeddingCpu(const float* table, const int32_t* tokens, int64_t T, int64_t H, float* out) {
  for (int64_t t = 0; t < T; ++t) std::memcpy(out + t * H, table + int64_t(tokens[t]) * H, H * sizeof(float));
}

void SiluMulCpu(const float* gate, const float* up, int64_t n, float* out) {
  for (int64_t i = 0; i < n; ++i) out[i] = gate[i] / (1.0f + std::exp(-gate[i])) * up[i];
}

void AddCpu(const float* x, int64_t n, float* y) {
  for (int64_t i = 0; i < n; ++i) y[i] += x[i];
}

void ScaleCpu(float* x, int64_t n, float s) {
  for (int64_t i = 0; i < n; ++i) x[i] *= s;
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

void LayerNormTrainCpu(const float* x, const float* w, const float* b, int64_t rows, int64_t dim, float eps, float* y,
                       float* xhat, float* inv) {
  for (int64_t r = 0; r < rows; ++r) {
    const float* xr = x + r * dim;
    double mean = 0, var = 0;
    for (int64_t i = 0; i < dim; ++i) mean += xr[i];
    mean /= dim;
    for (int64_t i = 0; i < dim; ++i) var += (xr[i] - mean) * (xr[i] - mean);
    var /= dim;
    const double iv = 1.0 / std::sqrt(var + eps);
    inv[r] = static_cast<float>(iv);
    for (int64_t i = 0; i < dim; ++i) {
      const float h = static_cast<float>((xr[i] - mean) * iv);
      xhat[r * dim + i] = h;
      y[r * dim + i] = h * w[i] + b[i];
    }
  }
}

void LayerNormBackwardCpu(const float* dy, const float* xhat, const float* inv, const float* w, int64_t rows,
                          int64_t dim, float* dx, float* dw, float* db) {
  for (int64_t r = 0; r < rows; ++r) {
    const float* g = dy + r * dim;
    const float* h = xhat + r * dim;
    double mean_g = 0, mean_gh = 0;
    for (int64_t i = 0; i < dim; ++i) {
      dw[i] += g[i] * h[i];
      db[i] += g[i];
      const double gx = double(g[i]) * w[i];
      mean_g += gx / dim;
      mean_gh += gx * h[i] / dim;
    }
    for (int64_t i = 0; i < dim; ++i) {
      const double gx = double(g[i]) * w[i];
      dx[r * dim + i] = static_cast<float>(inv[r] * (gx - mean_g - h[i] * mean_gh));
    }
  }
}

void GatherRowsCpu(const float* x, const int32_t* rows, int64_t n, int64_t cols, float* y) {
  for (int64_t i = 0; i < n; ++i) std::memcpy(y + i * cols, x + int64_t(rows[i]) * cols, cols * sizeof(float));
}

void ScatterAddRowsCpu(const float* x, const int32_t* rows, const float* scale, int64_t n, int64_t cols, float* y) {
  for (int64_t i = 0; i < n; ++i) {
    float* dst = y + int64_t(rows[i]) * cols;
    const float* src = x + i * cols;
    for (int64_t c = 0; c < cols; ++c) dst[c] += scale[i] * src[c];
  }
}

}  // namespace indexcache
