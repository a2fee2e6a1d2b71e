#include "kernels/fp8_quant.h"

#include <cmath>
#include <cstring>

namespace indexcache {

uint8_t Fp8E4M3Rne(float f) {
  if (std::isnan(f)) return 0x7f;
  const uint8_t sign = std::signbit(f) ? 0x80 : 0x00;
  const float a = std::fmin(std::fabs(f), kFp8E4M3Max);
  if (a < 0.015625f) {
    // Below the smallest normal (2^-6): subnormals are the multiples of 2^-9, codes 0..7; a value
    // that rounds up to 8 * 2^-9 = 2^-6 is code 8, the smallest normal, as the field layout gives.
    return sign | static_cast<uint8_t>(std::nearbyint(a * 512.f));  // exact scaling; RNE mode
  }
  uint32_t b;
  std::memcpy(&b, &a, 4);
  b += 0x7ffffu + ((b >> 20) & 1u);  // round the 23-bit mantissa to 3 bits, ties to even
  b >>= 20;                          // fp32 exponent (8 bits) | 3 mantissa bits
  const uint32_t e = (b >> 3) - 127u + 7u;  // rebias; a <= 448 keeps e <= 15 (448 = 0x7e)
  return sign | static_cast<uint8_t>((e << 3) | (b & 7u));
}

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
