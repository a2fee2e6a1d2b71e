#include "kernels/latent_fp8.h"

#include <cmath>
#include <cstring>
#include <string>

#include "core/dtype.h"

namespace indexcache {

StatusOr<LatentFp8Layout> MakeLatentFp8Layout(int64_t kv_lora_rank, int64_t qk_rope_head_dim) {
  if (kv_lora_rank <= 0 || kv_lora_rank % LatentFp8Layout::kBlock != 0 || kv_lora_rank > (int64_t{1} << 20)) {
    return InvalidArgument("FP8 latent cache: kv_lora_rank must be a positive multiple of 128 (one scale per 128 "
                           "values), got " + std::to_string(kv_lora_rank));
  }
  if (qk_rope_head_dim < 0 || qk_rope_head_dim % 2 != 0 || qk_rope_head_dim > (int64_t{1} << 20)) {
    return InvalidArgument("FP8 latent cache: qk_rope_head_dim must be even and at most 2^20, got " +
                           std::to_string(qk_rope_head_dim));
  }
  LatentFp8Layout layout;
  layout.nope = kv_lora_rank;
  layout.rope = qk_rope_head_dim;
  return layout;
}

void QuantizeLatentRowsCpu(const float* src, const int32_t* rows, int64_t n, const LatentFp8Layout& layout,
                           uint8_t* cache) {
  const int64_t dim = layout.dim(), bytes = layout.row_bytes();
  for (int64_t i = 0; i < n; ++i) {
    const float* x = src + i * dim;
    uint8_t* row = cache + int64_t(rows[i]) * bytes;
    for (int64_t b = 0; b < layout.blocks(); ++b) {
      const float* v = x + b * LatentFp8Layout::kBlock;
      float amax = 0.0f;
      for (int64_t j = 0; j < LatentFp8Layout::kBlock; ++j) amax = std::fmax(amax, std::fabs(v[j]));
      const float scale = LatentFp8Scale(amax);  // a power of two: x / scale is exact
      for (int64_t j = 0; j < LatentFp8Layout::kBlock; ++j) {
        row[b * LatentFp8Layout::kBlock + j] = FloatToFp8E4M3(v[j] / scale);
      }
      std::memcpy(row + layout.scale_offset() + 4 * b, &scale, 4);
    }
    for (int64_t j = 0; j < layout.rope; ++j) {
      const uint16_t h = FloatToBf16(x[layout.nope + j]);
      std::memcpy(row + layout.rope_offset() + 2 * j, &h, 2);
    }
  }
}

void DequantizeLatentRowsCpu(const uint8_t* cache, const int32_t* indices, int64_t n, const LatentFp8Layout& layout,
                             float* out) {
  const int64_t dim = layout.dim(), bytes = layout.row_bytes();
  for (int64_t i = 0; i < n; ++i) {
    float* y = out + i * dim;
    if (indices[i] < 0) {
      std::memset(y, 0, sizeof(float) * dim);
      continue;
    }
    const uint8_t* row = cache + int64_t(indices[i]) * bytes;
    for (int64_t b = 0; b < layout.blocks(); ++b) {
      float scale;
      std::memcpy(&scale, row + layout.scale_offset() + 4 * b, 4);
      for (int64_t j = 0; j < LatentFp8Layout::kBlock; ++j) {
        const int64_t c = b * LatentFp8Layout::kBlock + j;
        y[c] = Fp8E4M3ToFloat(row[c]) * scale;
      }
    }
    for (int64_t j = 0; j < layout.rope; ++j) {
      uint16_t h;
      std::memcpy(&h, row + layout.rope_offset() + 2 * j, 2);
      y[layout.nope + j] = Bf16ToFloat(h);
    }
  }
}

void CompactIndicesCpu(int64_t T, int64_t k, int32_t* indices) {
  for (int64_t i = 0; i < T * k; ++i) {
    if (indices[i] >= 0) indices[i] = static_cast<int32_t>(i);
  }
}

}  // namespace indexcache
