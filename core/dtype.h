// Element types and their conversions to and from float.
//
// bf16 and f16 round to nearest even; fp8 e4m3 is the OCP "e4m3fn" format (no infinities, one NaN
// encoding per sign, max 448) that DeepSeek and GLM checkpoints store with block scales.
#pragma once

#include <cstdint>
#include <cstring>
#include <string>

#include "core/status.h"

namespace indexcache {

enum class DType { kF32, kF64, kBF16, kF16, kF8E4M3, kI32, kI64, kBool, kU8 };

int64_t DTypeSize(DType dtype);
// Safetensors spelling: "F32", "BF16", "F8_E4M3", ...
const char* DTypeName(DType dtype);
StatusOr<DType> DTypeFromSafetensorsName(const std::string& name);
bool IsFloating(DType dtype);

inline float Bf16ToFloat(uint16_t bits) {
  uint32_t u = static_cast<uint32_t>(bits) << 16;
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

inline uint16_t FloatToBf16(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  if ((u & 0x7fffffffu) > 0x7f800000u) return static_cast<uint16_t>((u >> 16) | 0x40);  // quiet NaN
  u += 0x7fffu + ((u >> 16) & 1u);  // round to nearest even
  return static_cast<uint16_t>(u >> 16);
}

float F16ToFloat(uint16_t bits);
uint16_t FloatToF16(float f);
float Fp8E4M3ToFloat(uint8_t bits);
// Saturates to +-448; NaN stays NaN.
uint8_t FloatToFp8E4M3(float f);

// Converts `count` elements of `dtype` at `src` to float at `dst`. Integer types convert by value.
void ConvertToFloat(DType dtype, const void* src, float* dst, int64_t count);

}  // namespace indexcache
