#include <algorithm>
#include <cmath>

#include "kernels/rope.h"

namespace indexcache {

std::vector<float> RopeInverseFrequencies(const RopeConfig& rope, int64_t rope_dim) {
  const int64_t half = rope_dim / 2;
  std::vector<float> inv(half);
  const float base = static_cast<float>(rope.theta);
  for (int64_t i = 0; i < half; ++i) {
    inv[i] = 1.0f / std::pow(base, static_cast<float>(2 * i) / static_cast<float>(rope_dim));
  }
  if (rope.type == RopeType::kDefault) return inv;

  // YaRN (transformers' _compute_yarn_parameters): blend interpolated and extrapolated
  // frequencies with a linear ramp over the correction range.
  const double dim = static_cast<double>(rope_dim);
  const double base_d = rope.theta;
  const double max_pos = static_cast<double>(rope.original_max_position_embeddings);
  auto correction_dim = [&](double rotations) {
    return (dim * std::log(max_pos / (rotations * 2 * M_PI))) / (2 * std::log(base_d));
  };
  double low = correction_dim(rope.beta_fast), high = correction_dim(rope.beta_slow);
  if (rope.truncate) {
    low = std::floor(low);
    high = std::ceil(high);
  }
  low = std::max(low, 0.0);
  high = std::min(high, dim - 1);
  if (low == high) high += 0.001;  // avoid a zero-width ramp
  const float factor = static_cast<float>(rope.factor);
  for (int64_t i = 0; i < half; ++i) {
    const float pos_freq = std::pow(base, static_cast<float>(2 * i) / static_cast<float>(rope_dim));
    const float extrapolation = 1.0f / pos_freq;
    const float interpolation = 1.0f / (factor * pos_freq);
    const float ramp = std::clamp(static_cast<float>((static_cast<float>(i) - low) / (high - low)), 0.0f, 1.0f);
    const float extrapolation_factor = 1.0f - ramp;
    inv[i] = interpolation * (1.0f - extrapolation_factor) + extrapolation * extrapolation_factor;
  }
  return inv;
}

RopeTable BuildRopeTable(const RopeConfig& rope, int64_t rope_dim, int64_t first_position, int64_t num_positions) {
  RopeTable t;
  t.rope_dim = rope_dim;
  t.first_position = first_position;
  t.num_positions = num_positions;
  const int64_t half = rope_dim / 2;
  const std::vector<float> inv = RopeInverseFrequencies(rope, rope_dim);
  const float af = static_cast<float>(rope.attention_factor);
  t.cos.resize(num_positions * half);
  t.sin.resize(num_positions * half);
  for (int64_t p = 0; p < num_positions; ++p) {
    const float pos = static_cast<float>(first_position + p);
    for (int64_t i = 0; i < half; ++i) {
      const float angle = inv[i] * pos;  // fp32, as transformers computes it
      t.cos[p * half + i] = std::cos(angle) * af;
      t.sin[p * half + i] = std::sin(angle) * af;
    }
  }
  return t;
}

void ApplyRopeInterleavedCpu(const RopeTable& table, float* x, int64_t rows, int64_t heads, int64_t row_stride,
                             int64_t head_stride) {
  const int64_t half = table.rope_dim / 2;
  for (int64_t t = 0; t < rows; ++t) {
    const float* c = &table.cos[t * half];
    const float* s = &table.sin[t * half];
    for (int64_t h = 0; h < heads; ++h) {
      float* v = x + t * row_stride + h * head_stride;
      for (int64_t i = 0; i < half; ++i) {
        const float a = v[2 * i], b = v[2 * i + 1];
        v[2 * i] = a * c[i] - b * s[i];
        v[2 * i + 1] = b * c[i] + a * s[i];
      }
    }
  }
}

void ApplyRopeHalfSplitCpu(const RopeTable& table, float* x, int64_t rows, int64_t heads, int64_t row_stride,
                           int64_t head_stride) {
  const int64_t half = table.rope_dim / 2;
  for (int64_t t = 0; t < rows; ++t) {
    const float* c = &table.cos[t * half];
    const float* s = &table.sin[t * half];
    for (int64_t h = 0; h < heads; ++h) {
      float* v = x + t * row_stride + h * head_stride;
      for (int64_t i = 0; i < half; ++i) {
        const float a = v[i], b = v[i + half];
        v[i] = a * c[i] - b * s[i];
        v[i + half] = b * c[i] + a * s[i];
      }
    }
  }
}

}  // namespace indexcache
