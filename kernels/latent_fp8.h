// The FP8 latent cache's row format, CPU reference (CUDA: kernels/latent_fp8_cuda.h).
//
// A decode cache of MLA latents is the largest state a DSA server keeps (V3.2: 576 bf16 = 1152 bytes
// per token and layer). The FP8 option stores each row as
//
//   [ nope e4m3 bytes | nope/128 fp32 scales | rope bf16 values ]      (V3.2: 512 + 16 + 128 = 656 B)
//
// DeepSeek's production cache (FlashMLA's "V32_FP8Sparse" layout, byte for byte): the kv_lora_rank
// ("nope") part in e4m3 with one scale per 128 values, the rope part kept in bf16 (its positional
// signal does not survive 3 mantissa bits). Quantisation of a 128-value block, DeepSeek's rule:
// scale = LatentFp8Scale(amax), the smallest power of two >= max(amax / 448, 1e-4), stored as fp32;
// byte = e4m3(x / scale) rounded to nearest even and saturated (x / scale is exact). Dequantisation:
// e4m3(byte) * scale, one fp32 multiplication, which is exact (and so exact in bf16 too): that lets
// the sparse MLA dequantise with integer and bf16x2 operations instead of conversions
// (kernels/sparse_mla_ws_cuda.cu). Every backend implements exactly these operations (the CUDA
// kernels equal this reference bit for bit), and dequantisation accepts any fp32 scale.
//
// Reading the cache for a decode step gathers the rows a step's top-k selected (DequantizeLatentRows):
// output row i is the dequantised cache row indices[i], or zeros for index -1 (padding).
#pragma once

#include <cstdint>
#include <cstring>

#include "core/status.h"

namespace indexcache {

// The scale of a block whose largest magnitude is amax (see above). amax / 448 rounds to nearest;
// a NaN amax gives 2^-13 (the caller's non-finite check reports such latents); +inf gives +inf.
#ifdef __CUDACC__
__host__ __device__
#endif
inline float LatentFp8Scale(float amax) {
  float s = amax / 448.0f;
  if (!(s >= 1e-4f)) s = 1e-4f;
  uint32_t bits;
  std::memcpy(&bits, &s, 4);
  if ((bits & 0x7fffffu) != 0 && (bits >> 23) != 0xffu) bits = (bits & 0xff800000u) + 0x00800000u;  // round up
  std::memcpy(&s, &bits, 4);
  return s;
}

struct LatentFp8Layout {
  static constexpr int64_t kBlock = 128;  // values per scale
  int64_t nope = 0;                       // kv_lora_rank: a positive multiple of kBlock
  int64_t rope = 0;                       // qk_rope_head_dim: even

  int64_t dim() const { return nope + rope; }
  int64_t blocks() const { return nope / kBlock; }
  int64_t scale_offset() const { return nope; }
  int64_t rope_offset() const { return nope + 4 * blocks(); }
  int64_t row_bytes() const { return rope_offset() + 2 * rope; }
};

// The layout for a model's latent split; an error naming the field when nope is not a positive
// multiple of 128 (the FP8 cache then is not available for that model) or rope is odd (rows are
// read in 4-byte words).
StatusOr<LatentFp8Layout> MakeLatentFp8Layout(int64_t kv_lora_rank, int64_t qk_rope_head_dim);

// cache[rows[i], :] = Quantise(src[i, :]) for i in [0, n): src [n, dim] f32 (the CPU backend's
// activations; values already bf16-representable are stored exactly as the CUDA kernel stores the
// same bf16 values). rows distinct and in range (the caller's invariant).
void QuantizeLatentRowsCpu(const float* src, const int32_t* rows, int64_t n, const LatentFp8Layout& layout,
                           uint8_t* cache);

// out[i, :] = Dequantise(cache[indices[i], :]), zeros where indices[i] < 0, for i in [0, n).
void DequantizeLatentRowsCpu(const uint8_t* cache, const int32_t* indices, int64_t n, const LatentFp8Layout& layout,
                             float* out);

// The index rewrite that goes with a gather of a [T, k] top-k: entry (t, j) of `indices` becomes
// t * k + j (its row in the gathered buffer) where it is >= 0; -1 stays -1.
void CompactIndicesCpu(int64_t T, int64_t k, int32_t* indices);

}  // namespace indexcache
