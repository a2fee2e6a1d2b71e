#include "kernels/fp8_quant.h"

#include <cmath>
#include <cstring>

#include "core/dtype.h"

namespace indexcache {

// core's encoder is the same exact rounding (nearest even, saturating); one implementation.
uint8_t Fp8E4M3Rne(float f) { return FloatToFp8E4M3(f); }

float Fp8RowScale(float amax) {
  const float s = amax / kFp8E4M3Max;
  return s > 0.f ? s : 1.f;
}

void Fp8QuantRowsCpu(const float* x, int64_t rows, int64_t cols, uint8_t* q, float* scale) {
#pragma omp parallel for schedule(static) if (rows * cols > (1 << 20))
  for (int64_t r = 0; r < rows; ++r) {
    const float* xr = x + r * cols;
    float amax = 0.f;
    for (int64_t c = 0; c < cols; ++c) amax = std::fmax(amax, std::fabs(xr[c]));
    const float s = Fp8RowScale(amax);
    for (int64_t c = 0; c < cols; ++c) q[r * cols + c] = Fp8E4M3Rne(xr[c] / s);
    scale[r] = s;
  }
}

}  // namespace indexcache
