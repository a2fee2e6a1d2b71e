// Tests for core/dtype: bf16, f16 and fp8 e4m3fn conversions, checked against known bit patterns
// and against decoders written here from the format definitions (not copied from dtype.cc).
#include "core/dtype.h"

#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <random>
#include <vector>

#include "gtest/gtest.h"

namespace indexcache {
namespace {

float FloatFromBits(uint32_t u) {
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

uint32_t BitsOf(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  return u;
}

const float kInf = std::numeric_limits<float>::infinity();
const float kNaN = std::numeric_limits<float>::quiet_NaN();

// ---------------------------------------------------------------------------------------------
// bf16: the top 16 bits of a float32, rounded to nearest even.

TEST(Bf16Test, KnownValues) {
  EXPECT_EQ(FloatToBf16(1.0f), 0x3f80);
  EXPECT_EQ(FloatToBf16(-2.0f), 0xc000);
  EXPECT_EQ(FloatToBf16(0.0f), 0x0000);
  EXPECT_EQ(FloatToBf16(-0.0f), 0x8000);
  EXPECT_EQ(FloatToBf16(kInf), 0x7f80);
  EXPECT_EQ(FloatToBf16(-kInf), 0xff80);
  EXPECT_EQ(Bf16ToFloat(0x3f80), 1.0f);
  EXPECT_EQ(Bf16ToFloat(0x4049), 3.140625f);  // pi in bf16
  EXPECT_EQ(Bf16ToFloat(0xff80), -kInf);
}

TEST(Bf16Test, EveryNonNanCodeRoundTrips) {
  for (uint32_t b = 0; b < 0x10000; ++b) {
    const uint16_t bits = static_cast<uint16_t>(b);
    const float f = Bf16ToFloat(bits);
    EXPECT_EQ(BitsOf(f), b << 16);
    if (std::isnan(f)) {
      EXPECT_TRUE(std::isnan(Bf16ToFloat(FloatToBf16(f)))) << std::hex << b;
    } else {
      EXPECT_EQ(FloatToBf16(f), bits) << std::hex << b;
    }
  }
}

TEST(Bf16Test, RoundsToNearestEven) {
  // 0x3f808000 lies exactly halfway between bf16 0x3f80 (even) and 0x3f81 (odd): stays at 0x3f80.
  EXPECT_EQ(FloatToBf16(FloatFromBits(0x3f808000u)), 0x3f80);
  // Halfway between 0x3f81 (odd) and 0x3f82 (even): goes up to 0x3f82.
  EXPECT_EQ(FloatToBf16(FloatFromBits(0x3f818000u)), 0x3f82);
  // The same for negative numbers (rounding is on the magnitude).
  EXPECT_EQ(FloatToBf16(FloatFromBits(0xbf818000u)), 0xbf82);
  EXPECT_EQ(FloatToBf16(FloatFromBits(0xbf808000u)), 0xbf80);
  // Off the midpoint by one ulp of float32: plain nearest (truncation would fail the first).
  EXPECT_EQ(FloatToBf16(FloatFromBits(0x3f808001u)), 0x3f81);
  EXPECT_EQ(FloatToBf16(FloatFromBits(0x3f807fffu)), 0x3f80);
  EXPECT_EQ(FloatToBf16(FloatFromBits(0x3f81ffffu)), 0x3f82);
  // A carry out of the mantissa bumps the exponent: 1.9999999 -> 2.0.
  EXPECT_EQ(FloatToBf16(FloatFromBits(0x3fffffffu)), 0x4000);
  // Halfway between the largest finite bf16 (0x7f7f, odd) and infinity rounds to infinity.
  EXPECT_EQ(FloatToBf16(FloatFromBits(0x7f7f8000u)), 0x7f80);
  EXPECT_EQ(FloatToBf16(FloatFromBits(0x7f7f7fffu)), 0x7f7f);
  // Subnormals round the same way.
  EXPECT_EQ(FloatToBf16(FloatFromBits(0x00018000u)), 0x0002);
}

TEST(Bf16Test, NanStaysNan) {
  EXPECT_TRUE(std::isnan(Bf16ToFloat(FloatToBf16(kNaN))));
  EXPECT_TRUE(std::isnan(Bf16ToFloat(FloatToBf16(-kNaN))));
  // Payload only in the low 16 bits: naive truncation or rounding would turn it into infinity.
  EXPECT_TRUE(std::isnan(Bf16ToFloat(FloatToBf16(FloatFromBits(0x7f800001u)))));
  EXPECT_TRUE(std::isnan(Bf16ToFloat(FloatToBf16(FloatFromBits(0xff80ffffu)))));
}

// ---------------------------------------------------------------------------------------------
// f16: IEEE binary16, 5 exponent bits (bias 15), 10 mantissa bits.

// Decoder from the IEEE definition, in double.
double ReferenceF16(uint16_t h) {
  const int sign = h >> 15, exp = (h >> 10) & 0x1f, mant = h & 0x3ff;
  double v;
  if (exp == 0) {
    v = mant / 1024.0 * std::pow(2.0, -14);
  } else if (exp == 31) {
    v = mant ? std::numeric_limits<double>::quiet_NaN() : std::numeric_limits<double>::infinity();
  } else {
    v = (1.0 + mant / 1024.0) * std::pow(2.0, exp - 15);
  }
  return sign ? -v : v;
}

TEST(F16Test, KnownValues) {
  EXPECT_EQ(FloatToF16(1.0f), 0x3c00);
  EXPECT_EQ(FloatToF16(-2.0f), 0xc000);
  EXPECT_EQ(FloatToF16(0.5f), 0x3800);
  EXPECT_EQ(FloatToF16(65504.0f), 0x7bff);  // largest finite
  EXPECT_EQ(FloatToF16(std::ldexp(1.0f, -14)), 0x0400);  // smallest normal
  EXPECT_EQ(FloatToF16(std::ldexp(1.0f, -24)), 0x0001);  // smallest subnormal
  EXPECT_EQ(FloatToF16(-std::ldexp(1.0f, -24)), 0x8001);
  EXPECT_EQ(FloatToF16(0.0f), 0x0000);
  EXPECT_EQ(FloatToF16(-0.0f), 0x8000);
  EXPECT_EQ(FloatToF16(kInf), 0x7c00);
  EXPECT_EQ(FloatToF16(-kInf), 0xfc00);
  EXPECT_EQ(F16ToFloat(0x3c00), 1.0f);
  EXPECT_EQ(F16ToFloat(0x7bff), 65504.0f);
  EXPECT_EQ(F16ToFloat(0x0001), std::ldexp(1.0f, -24));
  EXPECT_EQ(F16ToFloat(0x03ff), std::ldexp(1023.0f, -24));  // largest subnormal
  EXPECT_EQ(F16ToFloat(0x7c00), kInf);
  EXPECT_EQ(F16ToFloat(0xfc00), -kInf);
  EXPECT_TRUE(std::isnan(F16ToFloat(0x7e00)));
  EXPECT_TRUE(std::isnan(F16ToFloat(0x7c01)));
  EXPECT_TRUE(std::isnan(F16ToFloat(FloatToF16(kNaN))));
}

TEST(F16Test, DecodeMatchesReferenceAndEncodeRoundTrips) {
  for (uint32_t b = 0; b < 0x10000; ++b) {
    const uint16_t h = static_cast<uint16_t>(b);
    const double expected = ReferenceF16(h);
    const float f = F16ToFloat(h);
    if (std::isnan(expected)) {
      EXPECT_TRUE(std::isnan(f)) << std::hex << b;
      continue;
    }
    EXPECT_EQ(static_cast<double>(f), expected) << std::hex << b;
    EXPECT_EQ(std::signbit(f), (b & 0x8000) != 0) << std::hex << b;
    EXPECT_EQ(FloatToF16(f), h) << std::hex << b;
  }
}

TEST(F16Test, RoundsToNearestEvenBetweenEveryPairOfNeighbours) {
  // For each positive finite code h and its successor, the midpoint (exact in float: it needs
  // 12 significant bits) must go to whichever of the two is even; one float ulp either side of
  // the midpoint must go to the nearer one. Covers subnormals (h = 0 is the 0..2^-24 gap) and
  // the subnormal/normal boundary.
  for (uint16_t h = 0; h < 0x7bff; ++h) {
    const float lo = F16ToFloat(h), hi = F16ToFloat(h + 1);
    const float mid = (lo + hi) / 2;
    ASSERT_GT(mid, lo);
    ASSERT_LT(mid, hi);
    const uint16_t even = (h % 2 == 0) ? h : static_cast<uint16_t>(h + 1);
    EXPECT_EQ(FloatToF16(mid), even) << std::hex << h;
    EXPECT_EQ(FloatToF16(std::nextafter(mid, 0.0f)), h) << std::hex << h;
    EXPECT_EQ(FloatToF16(std::nextafter(mid, kInf)), h + 1) << std::hex << h;
    EXPECT_EQ(FloatToF16(-mid), 0x8000 | even) << std::hex << h;
  }
}

TEST(F16Test, OverflowAndUnderflow) {
  // 65520 is halfway between 65504 (0x7bff, odd) and the next step 65536, which is infinity.
  EXPECT_EQ(FloatToF16(65520.0f), 0x7c00);
  EXPECT_EQ(FloatToF16(std::nextafter(65520.0f, 0.0f)), 0x7bff);
  EXPECT_EQ(FloatToF16(1e6f), 0x7c00);
  EXPECT_EQ(FloatToF16(-1e30f), 0xfc00);
  EXPECT_EQ(FloatToF16(std::numeric_limits<float>::max()), 0x7c00);
  // Below half the smallest subnormal: flushes to a signed zero.
  EXPECT_EQ(FloatToF16(std::ldexp(1.0f, -26)), 0x0000);
  EXPECT_EQ(FloatToF16(-std::ldexp(1.0f, -26)), 0x8000);
  EXPECT_EQ(FloatToF16(std::numeric_limits<float>::denorm_min()), 0x0000);
}

// ---------------------------------------------------------------------------------------------
// fp8 e4m3fn: 4 exponent bits (bias 7), 3 mantissa bits, no infinities, S.1111.111 is NaN.

double ReferenceE4M3(uint8_t code) {
  const int sign = code >> 7, exp = (code >> 3) & 0xf, mant = code & 0x7;
  if (exp == 0xf && mant == 0x7) return std::numeric_limits<double>::quiet_NaN();
  double v;
  if (exp == 0) {
    v = (mant / 8.0) * std::pow(2.0, 1 - 7);  // subnormal
  } else {
    v = (1.0 + mant / 8.0) * std::pow(2.0, exp - 7);
  }
  return sign ? -v : v;
}

TEST(Fp8E4M3Test, DecodeEveryCodeMatchesReference) {
  for (int code = 0; code < 256; ++code) {
    const double expected = ReferenceE4M3(static_cast<uint8_t>(code));
    const float f = Fp8E4M3ToFloat(static_cast<uint8_t>(code));
    if (std::isnan(expected)) {
      EXPECT_TRUE(std::isnan(f)) << code;
    } else {
      EXPECT_EQ(static_cast<double>(f), expected) << code;
      EXPECT_EQ(std::signbit(f), code >= 0x80) << code;
    }
  }
  // Only 0x7f and 0xff are NaN; 0x78 and 0xf8 (all-ones exponent) are ordinary numbers.
  int nans = 0;
  for (int code = 0; code < 256; ++code) nans += std::isnan(Fp8E4M3ToFloat(static_cast<uint8_t>(code)));
  EXPECT_EQ(nans, 2);
  EXPECT_TRUE(std::isnan(Fp8E4M3ToFloat(0x7f)));
  EXPECT_TRUE(std::isnan(Fp8E4M3ToFloat(0xff)));
  EXPECT_EQ(Fp8E4M3ToFloat(0x78), 256.0f);
  EXPECT_EQ(Fp8E4M3ToFloat(0x7e), 448.0f);
  EXPECT_EQ(Fp8E4M3ToFloat(0xfe), -448.0f);
  EXPECT_EQ(Fp8E4M3ToFloat(0x38), 1.0f);
  EXPECT_EQ(Fp8E4M3ToFloat(0x08), std::ldexp(1.0f, -6));  // smallest normal
  EXPECT_EQ(Fp8E4M3ToFloat(0x01), std::ldexp(1.0f, -9));  // smallest subnormal
  EXPECT_EQ(Fp8E4M3ToFloat(0x07), std::ldexp(7.0f, -9));  // largest subnormal
}

TEST(Fp8E4M3Test, EncodeRoundTripsEveryRepresentableValue) {
  for (int code = 0; code < 256; ++code) {
    if (code == 0x7f || code == 0xff) continue;
    EXPECT_EQ(FloatToFp8E4M3(Fp8E4M3ToFloat(static_cast<uint8_t>(code))), code) << code;
  }
}

TEST(Fp8E4M3Test, SaturatesInsteadOfOverflowing) {
  EXPECT_EQ(FloatToFp8E4M3(1000.0f), 0x7e);
  EXPECT_EQ(FloatToFp8E4M3(-1000.0f), 0xfe);
  EXPECT_EQ(FloatToFp8E4M3(464.0f), 0x7e);  // where a format with a next step would round up
  EXPECT_EQ(FloatToFp8E4M3(1e30f), 0x7e);
  EXPECT_EQ(FloatToFp8E4M3(kInf), 0x7e);
  EXPECT_EQ(FloatToFp8E4M3(-kInf), 0xfe);
}

// The nearest code by exhaustive search (ties to the even code): the encoder's definition.
uint8_t NearestE4M3BySearch(float f) {
  const uint8_t sign = std::signbit(f) ? 0x80 : 0x00;
  const float a = std::fmin(std::fabs(f), 448.0f);
  uint8_t best = 0;
  float best_err = INFINITY;
  for (uint8_t code = 0; code < 0x7f; ++code) {
    const float err = std::fabs(Fp8E4M3ToFloat(code) - a);
    if (err < best_err || (err == best_err && (code & 1) == 0)) {
      best_err = err;
      best = code;
    }
  }
  return sign | best;
}

TEST(Fp8E4M3Test, EncodeEqualsExhaustiveSearchOnRandomFloats) {
  std::mt19937 rng(5);
  std::uniform_real_distribution<float> exponent(-14.0f, 10.0f), unit(-1.0f, 1.0f);
  for (int i = 0; i < 200000; ++i) {
    const float f = unit(rng) * std::exp2(exponent(rng));
    ASSERT_EQ(FloatToFp8E4M3(f), NearestE4M3BySearch(f)) << f;
  }
}

TEST(Fp8E4M3Test, NanStaysNan) {
  EXPECT_TRUE(std::isnan(Fp8E4M3ToFloat(FloatToFp8E4M3(kNaN))));
  EXPECT_TRUE(std::isnan(Fp8E4M3ToFloat(FloatToFp8E4M3(-kNaN))));
}

TEST(Fp8E4M3Test, RoundsToNearestEven) {
  // As for f16: every gap between neighbouring positive codes, including 0..2^-9.
  for (int c = 0; c < 0x7e; ++c) {
    const float lo = Fp8E4M3ToFloat(static_cast<uint8_t>(c));
    const float hi = Fp8E4M3ToFloat(static_cast<uint8_t>(c + 1));
    const float mid = (lo + hi) / 2;
    const int even = (c % 2 == 0) ? c : c + 1;
    EXPECT_EQ(FloatToFp8E4M3(mid), even) << c;
    EXPECT_EQ(FloatToFp8E4M3(-mid), 0x80 | even) << c;
    EXPECT_EQ(FloatToFp8E4M3(std::nextafter(mid, 0.0f)), c) << c;
    EXPECT_EQ(FloatToFp8E4M3(std::nextafter(mid, kInf)), c + 1) << c;
  }
  // Spot checks by hand: 1.0625 is halfway between 1.0 (0x38) and 1.125 (0x39) -> 0x38;
  // 1.1875 is halfway between 1.125 (0x39) and 1.25 (0x3a) -> 0x3a.
  EXPECT_EQ(FloatToFp8E4M3(1.0625f), 0x38);
  EXPECT_EQ(FloatToFp8E4M3(1.1875f), 0x3a);
  EXPECT_EQ(FloatToFp8E4M3(0.0f), 0x00);
  EXPECT_EQ(FloatToFp8E4M3(-0.0f), 0x80);
  EXPECT_EQ(FloatToFp8E4M3(std::ldexp(1.0f, -11)), 0x00);  // under half the smallest subnormal
}

// ---------------------------------------------------------------------------------------------

TEST(ConvertToFloatTest, EveryDType) {
  float out[4];
  {
    const float src[3] = {1.5f, -0.0f, 3e38f};
    ConvertToFloat(DType::kF32, src, out, 3);
    EXPECT_EQ(std::memcmp(src, out, sizeof(src)), 0);
  }
  {
    const double src[3] = {0.1, -2.0, 1e300};
    ConvertToFloat(DType::kF64, src, out, 3);
    EXPECT_EQ(out[0], 0.1f);
    EXPECT_EQ(out[1], -2.0f);
    EXPECT_EQ(out[2], kInf);
  }
  {
    const uint16_t src[3] = {0x3f80, 0xc040, 0x7f80};
    ConvertToFloat(DType::kBF16, src, out, 3);
    EXPECT_EQ(out[0], 1.0f);
    EXPECT_EQ(out[1], -3.0f);
    EXPECT_EQ(out[2], kInf);
  }
  {
    const uint16_t src[3] = {0x3c00, 0xc200, 0x0001};
    ConvertToFloat(DType::kF16, src, out, 3);
    EXPECT_EQ(out[0], 1.0f);
    EXPECT_EQ(out[1], -3.0f);
    EXPECT_EQ(out[2], std::ldexp(1.0f, -24));
  }
  {
    const uint8_t src[4] = {0x38, 0xfe, 0x01, 0x7f};
    ConvertToFloat(DType::kF8E4M3, src, out, 4);
    EXPECT_EQ(out[0], 1.0f);
    EXPECT_EQ(out[1], -448.0f);
    EXPECT_EQ(out[2], std::ldexp(1.0f, -9));
    EXPECT_TRUE(std::isnan(out[3]));
  }
  {
    const int32_t src[3] = {-7, 0, 1 << 24};
    ConvertToFloat(DType::kI32, src, out, 3);
    EXPECT_EQ(out[0], -7.0f);
    EXPECT_EQ(out[1], 0.0f);
    EXPECT_EQ(out[2], 16777216.0f);
  }
  {
    const int64_t src[3] = {-5, int64_t{1} << 40, 123456};
    ConvertToFloat(DType::kI64, src, out, 3);
    EXPECT_EQ(out[0], -5.0f);
    EXPECT_EQ(out[1], std::ldexp(1.0f, 40));
    EXPECT_EQ(out[2], 123456.0f);
  }
  {
    const uint8_t src[3] = {0, 1, 255};
    ConvertToFloat(DType::kU8, src, out, 3);
    EXPECT_EQ(out[0], 0.0f);
    EXPECT_EQ(out[1], 1.0f);
    EXPECT_EQ(out[2], 255.0f);
    ConvertToFloat(DType::kBool, src, out, 2);
    EXPECT_EQ(out[0], 0.0f);
    EXPECT_EQ(out[1], 1.0f);
  }
  // count = 0 writes nothing.
  out[0] = 42.0f;
  ConvertToFloat(DType::kF8E4M3, nullptr, out, 0);
  EXPECT_EQ(out[0], 42.0f);
}

TEST(DTypeTest, SizesAndNames) {
  const struct { DType dtype; int64_t size; const char* name; bool floating; } kCases[] = {
      {DType::kF32, 4, "F32", true},      {DType::kF64, 8, "F64", true},
      {DType::kBF16, 2, "BF16", true},    {DType::kF16, 2, "F16", true},
      {DType::kF8E4M3, 1, "F8_E4M3", true}, {DType::kI32, 4, "I32", false},
      {DType::kI64, 8, "I64", false},     {DType::kBool, 1, "BOOL", false},
      {DType::kU8, 1, "U8", false},
  };
  for (const auto& c : kCases) {
    EXPECT_EQ(DTypeSize(c.dtype), c.size) << c.name;
    EXPECT_STREQ(DTypeName(c.dtype), c.name);
    EXPECT_EQ(IsFloating(c.dtype), c.floating) << c.name;
    auto parsed = DTypeFromSafetensorsName(c.name);
    ASSERT_TRUE(parsed.ok()) << c.name;
    EXPECT_EQ(*parsed, c.dtype);
  }
  // Names are case-sensitive and the e5m2 variant is not supported.
  for (const char* bad : {"f32", "F8_E5M2", "", "FLOAT"}) {
    auto parsed = DTypeFromSafetensorsName(bad);
    EXPECT_FALSE(parsed.ok()) << bad;
    EXPECT_EQ(parsed.status().code(), StatusCode::kInvalidArgument);
  }
}

// Issue 12 (UBSan): safetensors data may start at an odd byte offset; conversion must not use
// misaligned typed loads. Every dtype converts the same from an odd address as from an aligned one.
TEST(DTypeTest, ConvertsFromUnalignedSource) {
  alignas(16) unsigned char buf[1 + 8 * 4] = {};
  const double d[4] = {1.5, -2.0, 3.25, 0.0};
  std::memcpy(buf + 1, d, sizeof(d));
  float out[4];
  ConvertToFloat(DType::kF64, buf + 1, out, 4);
  EXPECT_EQ(out[0], 1.5f);
  EXPECT_EQ(out[2], 3.25f);
  const uint16_t h[2] = {FloatToBf16(2.5f), FloatToBf16(-1.0f)};
  std::memcpy(buf + 1, h, sizeof(h));
  ConvertToFloat(DType::kBF16, buf + 1, out, 2);
  EXPECT_EQ(out[0], 2.5f);
  EXPECT_EQ(out[1], -1.0f);
  const uint16_t f16[1] = {FloatToF16(0.5f)};
  std::memcpy(buf + 1, f16, sizeof(f16));
  ConvertToFloat(DType::kF16, buf + 1, out, 1);
  EXPECT_EQ(out[0], 0.5f);
  const int64_t i64[1] = {-42};
  std::memcpy(buf + 3, i64, sizeof(i64));
  ConvertToFloat(DType::kI64, buf + 3, out, 1);
  EXPECT_EQ(out[0], -42.0f);
}

}  // namespace
}  // namespace indexcache
