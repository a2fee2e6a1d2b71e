// Sparse MLA attention in the absorbed (MQA) form, CUDA backend (mirrors kernels/sparse_mla.h;
// SparseMlaCpu is the reference and defines the semantics).
//
//   out[t, h] = sum_j softmax_j(scale * q[t, h] . kv[i_j]) * kv[i_j, 0:d_v]
//   lse[t, h] = log sum_j exp(scale * q[t, h] . kv[i_j])     (natural log)
// over the valid entries i_j of indices[t, :] (valid: 0 <= i_j < L; -1 and out-of-range entries are
// skipped; duplicates count once each). A query with no valid index gets out = 0, lse = +inf.
//
// Supported sizes: d_qk = 576 and d_v = 512 (DeepSeek-V3.2 / GLM-5 absorbed MLA); anything else
// aborts. Any H >= 1 (heads are processed in groups of 64; a partial last group is zero-padded
// inside the kernel, so H = 16, 80 or 128 all work; multiples of 64 waste nothing), any topk >= 0,
// any L < 2^31. bf16 inputs and outputs, fp32 accumulation and online softmax (Hopper wgmma:
// sm_90a only). q, kv and out must be 16-byte aligned (cudaMalloc'd buffers are).
#pragma once

#include <cstdint>

#include <cuda_bf16.h>
#include <cuda_runtime_api.h>

namespace indexcache {

// Which kernel runs (both support every size above and give the same results up to fp32 summation
// order and ex2.approx rounding; see kernels/sparse_mla_cuda_internal.h). The default is the faster
// one at every measured shape (docs/benchmarks.md, 2026-12-01: 1.27-1.44x at prefill and decode).
enum class SparseMlaVariant : int {
  kTwoWarpgroups = 0,    // sparse_mla_cuda.cu: S, softmax and P V of a 64-key chunk in series
  kWarpSpecialized = 1,  // sparse_mla_ws_cuda.cu: loader warpgroup, consumers alternate key blocks
};

struct SparseMlaCudaParams {
  const __nv_bfloat16* q = nullptr;   // [T, H, d_qk] absorbed queries (device)
  const __nv_bfloat16* kv = nullptr;  // [L, d_qk]    latents; values are the first d_v dims (device)
  // Or, instead of kv, an FP8 latent cache: [L, 656] bytes in kernels/latent_fp8.h's row format
  // (512 e4m3 | 4 fp32 scales | 64 bf16 rope: LatentFp8Layout{512, 64}), 16-byte aligned. The
  // kernel dequantises the rows it gathers (kWarpSpecialized only; scale > 0): the results equal
  // those of SparseMlaCuda on DequantizeLatentRowsCuda's rows, bit for bit, for any fp32 block
  // scales; the powers of two that LatentFp8Scale writes (<= 2^7) take integer + bf16x2 arithmetic,
  // others fp32 (slower). e4m3 NaN bytes (never written: the quantiser saturates) are not NaN here.
  const uint8_t* kv_fp8 = nullptr;
  const int32_t* indices = nullptr;   // [T, topk]    key indices in [0, L), or -1 (device)
  int64_t T = 0, H = 0, d_qk = 576, d_v = 512, L = 0, topk = 0;
  float scale = 1.0f;                 // softmax scale applied to q . kv
  __nv_bfloat16* out = nullptr;       // [T, H, d_v]  (device)
  float* lse = nullptr;               // [T, H]       natural-log LSE; optional (may be null) (device)
  SparseMlaVariant variant = SparseMlaVariant::kWarpSpecialized;
};

// Asynchronous on `stream`; unsupported sizes and launch errors abort (CUDA_CHECK style).
void SparseMlaCuda(const SparseMlaCudaParams& p, cudaStream_t stream);

}  // namespace indexcache
