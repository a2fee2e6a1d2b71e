// The FP8 loader of the warp-specialised sparse MLA (kernels/sparse_mla_ws_cuda.cu): the loader
// warpgroup's work when SparseMlaCudaParams::kv_fp8 is set. Device code only.
#pragma once

#include <cstdint>

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_fp8.h>

#include "kernels/ptx.cuh"
#include "kernels/sparse_mla_ws_plan.cuh"

namespace indexcache {
namespace sparse_mla {
namespace ws {

#if INDEXCACHE_PTX_HAS_WGMMA
using namespace ptx;
using Plan = WsPlan;

// ---------------- The FP8 loader (SparseMlaCudaParams::kv_fp8): rows of kernels/latent_fp8.h's
// format, [512 e4m3 | 4 fp32 scales | 64 bf16 rope] = 656 bytes, dequantised into the same bf16
// stages, so the consumers (and the results) are those of the bf16 path on DequantizeLatentRows'
// output. Shared memory has no room for a separate staging buffer (Q + 2 stages + P = 224 KB), so
// the raw bytes land inside the bf16 tile they become: the 64 e4m3 of (row r, column block b) are
// copied into 4 of the 8 16-byte chunks of that row's 128-byte segment of block b (chunk k at
// position k ^ (r & 7): conflict-free reads), and the row's 4 scales into a fifth chunk
// (position 4 ^ (r & 7)) of the first segment of each 128-column scale block. One thread then owns
// the two segments of a (row, scale block): it reads a segment's 64 bytes into registers, then
// writes its 128 bytes of bf16 in place (second segment first: the scales live in the first). The
// RoPE block (bf16 already) is copied as in the bf16 path.
// Each of the 4 loader warps owns rows 16 w .. 16 w + 15 of every block, for both the copies and the
// conversion, so a warp depends only on its own copies (its cp.async groups and __syncwarp).
// Unlike cp.async, the conversion occupies the loader's threads: a warp refills a half-stage as soon
// as it is free (a non-blocking probe while older copies are in flight, up to 3 half-stages) and
// otherwise converts the oldest, waiting for its copies (decisions warp-uniform). An alternative that
// polls both barriers (WsExperiment::fp8_polling: per-warp "landed" mbarriers, try_wait with a
// 200 ns hint, or __nanosleep) so that a wait for data never delays a refill measured 1-3 % slower.
// Measured limit (docs/benchmarks.md, 2026-12-01): 273-305 TFLOP/s at the decode shape against
// 464-487 for bf16 rows in the same runs. The dequantisation's instructions are not it (power-of-two
// scales made it integer + bf16x2 instead of the quarter-rate conversions: +6-10 %); with 2 stages
// each half-stage's refill has the copy latency plus the conversion on the consumers' critical path.
constexpr int kFp8RowBytes = 656, kFp8ScaleOffset = 512, kFp8RopeOffset = 528;

// Half-stage h of the loader's sequence (per pair: 0L, 1R, 0R, 1L, the order the consumers need them).
__device__ __forceinline__ int SeqStage(int h) { return h & 1; }
__device__ __forceinline__ int SeqHalf(int h) { return ((h & 3) == 1 || (h & 3) == 2) ? 1 : 0; }

// e4m3 pair (low 16 bits: first element in the low byte) times any scale, as bf16x2: the CPU
// reference's operations (exact e4m3 -> fp32, one fp32 multiplication, round to bf16). The general
// path, for scales that are not powers of two (kernels/latent_fp8.h writes powers of two).
__device__ __forceinline__ uint32_t DequantPairAnyScale(uint32_t bits, float scale) {
  const __half2_raw h = __nv_cvt_fp8x2_to_halfraw2(static_cast<__nv_fp8x2_storage_t>(bits & 0xffffu), __NV_E4M3);
  const float2 f = __half22float2(__half2(h));
  return PackBf16(f.x * scale, f.y * scale);
}

// Two e4m3 bytes of w (prmt selector sel: bytes i, i + 1, each followed by its sign replicated) as a
// bf16x2 of value x * 2^-120: the e4m3 exponent and mantissa bits placed under bf16's (bits 4..10 of
// each half) and the sign at bit 15. Exact for every e4m3 value, zero and subnormals included
// (bf16 subnormals then), except NaN (0x7f / 0xff, never written by the quantiser: it saturates).
// Integer operations only: the conversion units (cvt e4m3 -> f16, f16 -> f32, f32 -> bf16) run at
// a quarter of the FMA rate and were this loader's limit.
__device__ __forceinline__ uint32_t E4m3PairRawBf16(uint32_t w, uint32_t sel) {
  uint32_t p;
  asm("prmt.b32 %0, %1, 0, %2;" : "=r"(p) : "r"(w), "r"(sel));
  return (p << 4) & 0x87f087f0u;
}
__device__ __forceinline__ uint32_t MulBf16x2(uint32_t a, uint32_t b) {
  uint32_t d;
  asm("mul.rn.bf16x2 %0, %1, %2;" : "=r"(d) : "r"(a), "r"(b));
  return d;
}

// Converts one 128-byte segment in place: the e4m3 chunks at positions k ^ sw (k = 0..3) become the
// bf16 chunks 2k, 2k + 1 at positions (2k) ^ sw, (2k + 1) ^ sw. With a power-of-two scale 2^e
// (e <= 7: bf16 can hold 2^(e + 120)), x * 2^e = raw(x) * 2^(e + 120) is one exact bf16x2
// multiplication per pair, the same bits as the general path.
__device__ __forceinline__ void DequantSegment(uint32_t seg, uint32_t sw, float scale) {
  uint4 in[4];
#pragma unroll
  for (uint32_t k = 0; k < 4; ++k) in[k] = LoadShared128(seg + ((k ^ sw) << 4));
  const uint32_t sbits = __float_as_uint(scale), sexp = (sbits >> 23) & 0xffu;
  if ((sbits & 0x807fffffu) == 0 && sexp >= 1 && sexp <= 127 + 7) {
    const uint32_t f = (sexp + 120u) << 7, f2 = f | (f << 16);  // bf16x2 2^(e + 120)
    auto q = [&](uint32_t w, uint32_t sel) { return MulBf16x2(E4m3PairRawBf16(w, sel), f2); };
#pragma unroll
    for (uint32_t k = 0; k < 4; ++k) {
      StoreShared128(seg + (((2 * k) ^ sw) << 4), make_uint4(q(in[k].x, 0x9180u), q(in[k].x, 0xb3a2u),
                                                             q(in[k].y, 0x9180u), q(in[k].y, 0xb3a2u)));
      StoreShared128(seg + (((2 * k + 1) ^ sw) << 4), make_uint4(q(in[k].z, 0x9180u), q(in[k].z, 0xb3a2u),
                                                                 q(in[k].w, 0x9180u), q(in[k].w, 0xb3a2u)));
    }
    return;
  }
#pragma unroll
  for (uint32_t k = 0; k < 4; ++k) {
    auto q = [&](uint32_t w) { return DequantPairAnyScale(w, scale); };
    StoreShared128(seg + (((2 * k) ^ sw) << 4),
                   make_uint4(q(in[k].x), q(in[k].x >> 16), q(in[k].y), q(in[k].y >> 16)));
    StoreShared128(seg + (((2 * k + 1) ^ sw) << 4),
                   make_uint4(q(in[k].z), q(in[k].z >> 16), q(in[k].w), q(in[k].w >> 16)));
  }
}

// The loader warpgroup's work on the FP8 path (after Q): every half-stage of every pair.
__device__ __forceinline__ void Fp8LoaderLoop(const uint8_t* __restrict__ kv8, const int32_t* __restrict__ idx_row,
                                              int topk, int L, int n_pairs, uint32_t sb, uint64_t kv_policy,
                                              bool polling) {
  const int lane = threadIdx.x & 31, lw = (threadIdx.x >> 5) & 3;
  // Lane l holds the cache row of key 16 lw + (l & 15) of block (l >> 4) of a pair (-1: none).
  auto pair_rows = [&](int pair) {
    const int j = (2 * pair + (lane >> 4)) * kBlockKeys + 16 * lw + (lane & 15);
    const int v = (pair < n_pairs && j < topk) ? __ldg(idx_row + j) : -1;
    return (v >= 0 && v < L) ? v : -1;
  };
  auto gather = [&](int h, int rows) {
    const int stage = SeqStage(h), half = SeqHalf(h);
    const uint32_t base = sb + Plan::kKv + stage * kTileBytes;
    const int cb0 = half ? kLeftBlocks : 0;
    // e4m3 bytes [256 half, 256 half + 256) of 16 rows: 2 rows of 16 chunks per instruction.
#pragma unroll
    for (int i = 0; i < 8; ++i) {
      const int rr = 2 * i + (lane >> 4), q = lane & 15, r = 16 * lw + rr;
      const int v = __shfl_sync(0xffffffffu, rows, stage * 16 + rr);
      const uint32_t dst = base + (cb0 + (q >> 2)) * kBlockBytes + r * 128 + (((q & 3) ^ (r & 7)) << 4);
      const uint8_t* src = kv8 + static_cast<int64_t>(v < 0 ? 0 : v) * kFp8RowBytes + 256 * half + 16 * q;
      CpAsync16ZeroFillL2PrefetchHint(dst, src, v >= 0, kv_policy);
    }
    {  // the scales, into the first segment of both scale blocks of the half
      const int rr = lane >> 1, r = 16 * lw + rr;
      const int v = __shfl_sync(0xffffffffu, rows, stage * 16 + rr);
      const uint32_t dst = base + (cb0 + 2 * (lane & 1)) * kBlockBytes + r * 128 + ((4 ^ (r & 7)) << 4);
      CpAsync16ZeroFillL2PrefetchHint(dst, kv8 + static_cast<int64_t>(v < 0 ? 0 : v) * kFp8RowBytes + kFp8ScaleOffset,
                                      v >= 0, kv_policy);
    }
    if (half == 1) {  // RoPE: bf16, straight into column block 8, 4 rows of 8 chunks per instruction
#pragma unroll
      for (int i = 0; i < 4; ++i) {
        const int rr = 4 * i + (lane >> 3), c = lane & 7, r = 16 * lw + rr;
        const int v = __shfl_sync(0xffffffffu, rows, stage * 16 + rr);
        const uint32_t dst = base + 8 * kBlockBytes + r * 128 + ((c ^ (r & 7)) << 4);
        const uint8_t* src = kv8 + static_cast<int64_t>(v < 0 ? 0 : v) * kFp8RowBytes + kFp8RopeOffset + 16 * c;
        CpAsync16ZeroFillL2PrefetchHint(dst, src, v >= 0, kv_policy);
      }
    }
    if (polling) {
      CpAsyncMbarArrive(sb + Plan::Landed(lw, stage, half));
    } else {
      CpAsyncCommitMem();
    }
  };
  auto convert = [&](int h) {
    const int stage = SeqStage(h), half = SeqHalf(h);
    const int r = 16 * lw + (lane & 15), pj = lane >> 4;  // row, scale block within the half
    const uint32_t sw = static_cast<uint32_t>(r & 7);
    const uint32_t seg0 = sb + Plan::kKv + stage * kTileBytes + (2 * (2 * half + pj)) * kBlockBytes + r * 128;
    const float scale = LoadSharedF32(seg0 + ((4 ^ sw) << 4) + 4 * (2 * half + pj));
    DequantSegment(seg0 + kBlockBytes, sw, scale);
    DequantSegment(seg0, sw, scale);
    FenceProxyAsync();  // generic-proxy writes, read by wgmma
    MbarArrive(sb + Plan::Ready(stage, half));
  };

  const int total = 4 * n_pairs;
  int issued = 0, done = 0;
  int rows_cur = pair_rows(0), rows_next = pair_rows(1);  // pairs issued >> 2 and the one after
  auto issue = [&]() {
    if (issued > 0 && (issued & 3) == 0) {
      rows_cur = rows_next;
      rows_next = pair_rows((issued >> 2) + 1);
    }
    gather(issued, rows_cur);
    ++issued;
  };
  // Phase parities: half-stage h is the (h >> 2)-th use of its region.
  auto free_bar = [&](int h) { return sb + Plan::Free(SeqStage(h), SeqHalf(h)); };
  auto landed_bar = [&](int h) { return sb + Plan::Landed(lw, SeqStage(h), SeqHalf(h)); };
  if (polling) {  // experiment
    while (done < total) {
      if (issued < total && __all_sync(0xffffffffu, MbarTest(free_bar(issued), ((issued >> 2) & 1) ^ 1))) {
        issue();
      } else if (done < issued && __all_sync(0xffffffffu, MbarTest(landed_bar(done), (done >> 2) & 1))) {
        convert(done);
        ++done;
      } else if (done == issued) {
        MbarWait(free_bar(issued), ((issued >> 2) & 1) ^ 1);  // nothing to convert: wait for a free half
      } else {
        // Sleep on the oldest copy (woken when it lands), but not so long that a freed half waits.
        (void)MbarTryWaitFor(landed_bar(done), (done >> 2) & 1, 200);
      }
    }
    return;
  }
  constexpr int kDepth = 3;
  while (done < total) {
    if (issued < total && issued - done < kDepth) {
      const uint32_t parity = ((issued >> 2) & 1) ^ 1;  // the previous use's phase
      bool go;
      if (issued == done) {
        MbarWait(free_bar(issued), parity);
        go = true;
      } else {
        go = __all_sync(0xffffffffu, MbarTest(free_bar(issued), parity));
      }
      if (go) {
        issue();
        continue;
      }
    }
    const int newer = issued - done - 1;
    if (newer >= 2) {
      CpAsyncWaitMem<2>();
    } else if (newer == 1) {
      CpAsyncWaitMem<1>();
    } else {
      CpAsyncWaitMem<0>();
    }
    __syncwarp();
    convert(done);
    ++done;
  }
}

#endif  // INDEXCACHE_PTX_HAS_WGMMA

}  // namespace ws
}  // namespace sparse_mla
}  // namespace indexcache
