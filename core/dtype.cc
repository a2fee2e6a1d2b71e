#include "core/dtype.h"

#include <cmath>

namespace indexcache {

int64_t DTypeSize(DType dtype) {
  switch (dtype) {
    case DType::kF64: case DType::kI64: return 8;
    case DType::kF32: case DType::kI32: return 4;
    case DType::kBF16: case DType::kF16: return 2;
    case DType::kF8E4M3: case DType::kBool: case DType::kU8: return 1;
  }
  return 0;
}

const char* DTypeName(DType dtype) {
  switch (dtype) {
    case DType::kF32: return "F32";
    case DType::kF64: return "F64";
    case DType::kBF16: return "BF16";
    case DType::kF16: return "F16";
    case DType::kF8E4M3: return "F8_E4M3";
    case DType::kI32: return "I32";
    case DType::kI64: return "I64";
    case DType::kBool: return "BOOL";
    case DType::kU8: return "U8";
  }
  return "?";
}

StatusOr<DType> DTypeFromSafetensorsName(const std::string& name) {
  static const struct { const char* name; DType dtype; } kTable[] = {
      {"F32", DType::kF32},   {"F64", DType::kF64},        {"BF16", DType::kBF16},
      {"F16", DType::kF16},   {"F8_E4M3", DType::kF8E4M3}, {"I32", DType::kI32},
      {"I64", DType::kI64},   {"BOOL", DType::kBool},      {"U8", DType::kU8},
  };
  for (const auto& entry : kTable) {
    if (name == entry.name) return entry.dtype;
  }
  return InvalidArgument("unsupported dtype '" + name + "'");
}

bool IsFloating(DType dtype) {
  return dtype == DType::kF32 || dtype == DType::kF64 || dtype == DType::kBF16 ||
         dtype == DType::kF16 || dtype == DType::kF8E4M3;
}

float F16ToFloat(uint16_t h) {
  const uint32_t sign = (h >> 15) & 1u, exp = (h >> 10) & 0x1fu, mant = h & 0x3ffu;
  float value;
  if (exp == 0) {
    value = std::ldexp(static_cast<float>(mant), -24);  // subnormal
  } else if (exp == 31) {
    value = mant ? NAN : INFINITY;
  } else {
    value = std::ldexp(static_cast<float>(mant | 0x400u), static_cast<int>(exp) - 25);
  }
  return sign ? -value : value;
}

uint16_t FloatToF16(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  const uint16_t sign = static_cast<uint16_t>((u >> 16) & 0x8000u);
  if (std::isnan(f)) return sign | 0x7e00u;
  const float a = std::fabs(f);
  if (a >= 65520.0f) return sign | 0x7c00u;  // rounds to infinity
  if (a < 6.103515625e-05f) {                // subnormal range: multiples of 2^-24
    return sign | static_cast<uint16_t>(std::nearbyint(a * 16777216.0f));
  }
  int e;
  const float m = std::frexp(a, &e);  // a = m * 2^e, m in [0.5, 1)
  // 11 significant bits: mantissa = round(m * 2^11), exponent field = e + 14.
  uint32_t mant = static_cast<uint32_t>(std::nearbyint(m * 2048.0f));
  int exp_field = e + 14;
  if (mant == 2048) { mant = 1024; ++exp_field; }
  if (exp_field >= 31) return sign | 0x7c00u;
  return sign | static_cast<uint16_t>((exp_field << 10) | (mant & 0x3ffu));
}

float Fp8E4M3ToFloat(uint8_t bits) {
  const uint32_t sign = bits >> 7, exp = (bits >> 3) & 0xfu, mant = bits & 0x7u;
  float value;
  if (exp == 0xf && mant == 0x7) {
    value = NAN;
  } else if (exp == 0) {
    value = std::ldexp(static_cast<float>(mant), -9);  // subnormal: mant/8 * 2^-6
  } else {
    value = std::ldexp(static_cast<float>(mant | 0x8u), static_cast<int>(exp) - 10);
  }
  return sign ? -value : value;
}

uint8_t FloatToFp8E4M3(float f) {
  if (std::isnan(f)) return 0x7f;
  const uint8_t sign = std::signbit(f) ? 0x80 : 0x00;
  const float a = std::fmin(std::fabs(f), 448.0f);
  // Quantise to the binade's step (a power of two, so the division and the product are exact) with
  // round-to-nearest-even (nearbyint under the default rounding mode). Below 2^-6 the step is the
  // subnormal one, 2^-9. A mantissa that rounds up to 16 carries into the next exponent, which
  // the code arithmetic below does by itself; 448 is the largest code (0x7e), so no overflow.
  if (a < std::ldexp(1.0f, -6)) {
    return sign | static_cast<uint8_t>(std::nearbyint(std::ldexp(a, 9)));  // 0..8 (8 = 2^-6, code 0x08)
  }
  int e2 = 0;
  std::frexp(a, &e2);  // a = m * 2^e2 with m in [0.5, 1): the binade's exponent is e2 - 1
  const int e = e2 - 1;
  const int m = static_cast<int>(std::nearbyint(std::ldexp(a, 3 - e)));  // 8..16
  return sign | static_cast<uint8_t>(((e + 7) << 3) + (m - 8));
}

namespace {
// Element i of a T array at `src`, which need not be aligned for T: safetensors data sections may
// start at any byte offset, and a misaligned typed load is undefined behaviour (and traps on some
// CPUs). The fixed-size memcpy compiles to a plain load.
template <typename T>
T LoadUnaligned(const void* src, int64_t i) {
  T v;
  std::memcpy(&v, static_cast<const unsigned char*>(src) + i * static_cast<int64_t>(sizeof(T)), sizeof(T));
  return v;
}
}  // namespace

void ConvertToFloat(DType dtype, const void* src, float* dst, int64_t count) {
  switch (dtype) {
    case DType::kF32: std::memcpy(dst, src, count * 4); return;
    case DType::kF64: {
      for (int64_t i = 0; i < count; ++i) dst[i] = static_cast<float>(LoadUnaligned<double>(src, i));
      return;
    }
    case DType::kBF16: {
      for (int64_t i = 0; i < count; ++i) dst[i] = Bf16ToFloat(LoadUnaligned<uint16_t>(src, i));
      return;
    }
    case DType::kF16: {
      for (int64_t i = 0; i < count; ++i) dst[i] = F16ToFloat(LoadUnaligned<uint16_t>(src, i));
      return;
    }
    case DType::kF8E4M3: {
      float table[256];
      for (int b = 0; b < 256; ++b) table[b] = Fp8E4M3ToFloat(static_cast<uint8_t>(b));
      const uint8_t* s = static_cast<const uint8_t*>(src);
      for (int64_t i = 0; i < count; ++i) dst[i] = table[s[i]];
      return;
    }
    case DType::kI32: {
      for (int64_t i = 0; i < count; ++i) dst[i] = static_cast<float>(LoadUnaligned<int32_t>(src, i));
      return;
    }
    case DType::kI64: {
      for (int64_t i = 0; i < count; ++i) dst[i] = static_cast<float>(LoadUnaligned<int64_t>(src, i));
      return;
    }
    case DType::kBool: case DType::kU8: {
      const uint8_t* s = static_cast<const uint8_t*>(src);
      for (int64_t i = 0; i < count; ++i) dst[i] = static_cast<float>(s[i]);
      return;
    }
  }
}

}  // namespace indexcache
