// Per-row FP8 e4m3 quantisation (activations: the lightning indexer's q and k), CPU reference.
//
// A row of `cols` values x becomes e4m3 codes plus one fp32 scale:
//   scale = amax(|x|) / 448    (448 = the largest finite e4m3; 1 where that is not positive)
//   q[c]  = e4m3_rn_satfinite(x[c] / scale)
// so x[c] ~= e4m3_to_float(q[c]) * scale, the row's largest magnitude maps to +-448 and the scale is
// positive (the FP8 indexer relies on that: ReLU(a * b * x) = a * b * ReLU(x) for a, b > 0).
// Both the division and the rounding are IEEE operations, so the CUDA kernel
// (kernels/fp8_quant_cuda.h) gives bitwise the same codes and scales. Dequantisation is
// Fp8DequantCpu (kernels/fp8_dequant.h) with blocks of 1 x cols. Inputs must be finite.
#pragma once

#include <cstdint>

namespace indexcache {

// The largest finite e4m3 ("e4m3fn") magnitude.
constexpr float kFp8E4M3Max = 448.f;

// e4m3 code of f, rounded to nearest even, saturated to +-448 (NaN -> 0x7f): the same result as
// FloatToFp8E4M3 (core/dtype.h) and as CUDA's __nv_cvt_float_to_fp8(f, __NV_SATFINITE, __NV_E4M3),
// by bit manipulation instead of a search (fast enough for whole activation tensors).
uint8_t Fp8E4M3Rne(float f);

// The scale of a row whose largest magnitude is amax: amax / 448, or 1 where that is not positive
// (an all-zero row: its codes are all zero whatever the scale).
float Fp8RowScale(float amax);

// x [rows, cols] fp32 -> q [rows, cols] e4m3 codes and scale [rows], as above.
void Fp8QuantRowsCpu(const float* x, int64_t rows, int64_t cols, uint8_t* q, float* scale);

}  // namespace indexcache
