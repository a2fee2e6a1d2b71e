// Sparse MLA (absorbed MQA form) on Hopper, the first wgmma kernel (SparseMlaVariant::kTwoWarpgroups;
// the default is now the warp-specialised kernel in sparse_mla_ws_cuda.cu, 1.27-1.44x faster). This
// file also holds SparseMlaCuda, which validates the parameters and dispatches on the variant.
// One CTA per (query token, group of 64 heads).
//
// Layout of one CTA (256 threads = 2 warpgroups, WG0 and WG1; ~226 KB of shared memory, 1 CTA/SM):
//   sQ    [64 heads][576]  bf16, loaded once (cp.async), rows past H zero-filled
//   sKV   2 stages x [64 keys][576] bf16, gathered with cp.async (16 B per copy, invalid keys
//         zero-filled), double-buffered: chunk j+1 is in flight while chunk j is computed
//   sP    [64 heads][64 keys] bf16, the softmax numerators of the current chunk
// Every tile is stored as 64-column blocks of 128-byte rows with the 128-byte swizzle that
// wgmma's descriptors expect, so one latent tile serves both as K (K-major B operand of S = Q K^T)
// and as V (its first 512 columns, MN-major B operand of O = P V): no transposes, no copies.
//
// Per chunk of 64 selected keys:
//   1. S_w = Q K_w^T          WG w takes keys [32w, 32w + 32): 36 x wgmma m64n32k16 (fp32 accum)
//   2. online softmax        masked keys -> -inf; the row max is shared between the two WGs
//                            through shared memory so both rescale with the same max (which
//                            moves only when it grows by > 2^8, so O is rarely rescaled); P
//                            (bf16) goes to sP
//   3. O_w = O_w * alpha + P V[:, 256w : 256w + 256]    4 x wgmma m64n256k16 (B transposed)
// WG w owns output columns [256w, 256w + 256) of all 64 heads: 128 fp32 accumulators per thread.
// At the end the two WGs' partial row sums are added, O is normalised and written as bf16, and
// lse = (m + log2(l)) * ln 2 (the softmax runs in base 2 on scale * log2(e) * q.k).
//
// Measured (sparse_mla_cuda_bench, H100 SXM, T=4096, H=128, topk=2048, 2026-11-23, two runs):
// 452 / 448-453 / 422-425 TFLOP/s at L = 8K / 32K / 128K (cuBLAS bf16 GEMM 788); FlashMLA 599/561/515.
// What limits it: the three phases of a chunk run one after another (S, softmax with two CTA
// barriers, P V), so the tensor cores idle during softmax and barriers; S with N = 32 per WG reads
// all of Q from shared memory for every 32 keys (shared-memory bound); only 2 KV stages fit next
// to Q (one chunk of gather latency hidden), and each latent is gathered once per 64-head group.
#include "kernels/sparse_mla_cuda.h"

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>

#include "core/cuda_check.h"
#include "kernels/ptx.cuh"
#include "kernels/sparse_mla_cuda_internal.h"

// wgmma exists only in the sm_90a target; the compute_90 PTX that the build also embeds gets a
// kernel that traps (a driver JIT for a non-Hopper GPU cannot run this kernel anyway).
#if !defined(__CUDA_ARCH__) || defined(__CUDA_ARCH_FEAT_SM90_ALL)
#define SPARSE_MLA_HAS_WGMMA 1
#else
#define SPARSE_MLA_HAS_WGMMA 0
#endif

namespace indexcache {
namespace {

constexpr int kDqk = 576;
constexpr int kDv = 512;
constexpr int kHeadsPerCta = 64;
[[maybe_unused]] constexpr int kKeysPerChunk = 64;
constexpr int kThreads = 256;
constexpr int kBlockBytes = 64 * 128;                 // one 64-row x 64-column bf16 block
constexpr int kTileBytes = (kDqk / 64) * kBlockBytes;  // 73728: 64 rows x 576 columns
[[maybe_unused]] constexpr int kQOff = 0;
[[maybe_unused]] constexpr int kKvOff = kTileBytes;                    // 2 stages
constexpr int kPOff = 3 * kTileBytes;                  // 64 x 64 bf16 = 8192 B
constexpr int kRedOff = kPOff + kBlockBytes;           // float [2][64]: row max / row sum exchange
constexpr int kIdxOff = kRedOff + 2 * 64 * 4;          // int [2 stages][64]: key index or -1
constexpr int kSmemUsed = kIdxOff + 2 * 64 * 4;
constexpr int kSmemBytes = kSmemUsed + 1024;           // slack to align the base to 1024 B
static_assert(kSmemBytes <= 227 * 1024, "shared memory budget");

#if SPARSE_MLA_HAS_WGMMA

// Byte offset of 16-byte chunk `c` (0..71) of row `r` (0..63) in a swizzled 64 x 576 tile.
__device__ __forceinline__ uint32_t SwizzledOffset(int r, int c) {
  return (c >> 3) * kBlockBytes + r * 128 + (((c & 7) ^ (r & 7)) << 4);
}

// cp.async, the wgmma wrappers and st.shared: kernels/ptx.cuh. This kernel's cp.async wrappers carry a
// "memory" clobber (the *Mem variants there) and zero-fill invalid keys; its descriptor is WgmmaDesc.
using namespace ptx;

__global__ void __launch_bounds__(kThreads, 1)
    SparseMlaKernel(const __nv_bfloat16* __restrict__ q, const __nv_bfloat16* __restrict__ kv,
                    const int32_t* __restrict__ indices, int H, int L, int topk, int head_groups,
                    float scale_log2, __nv_bfloat16* __restrict__ out, float* __restrict__ lse) {
  extern __shared__ uint8_t smem_raw[];
  const uint32_t raw_addr = static_cast<uint32_t>(__cvta_generic_to_shared(smem_raw));
  const uint32_t pad = ((raw_addr + 1023u) & ~1023u) - raw_addr;
  uint8_t* smem = smem_raw + pad;
  const uint32_t sbase = raw_addr + pad;
  const uint32_t sQ = sbase + kQOff, sKV = sbase + kKvOff, sP = sbase + kPOff;
  float* red = reinterpret_cast<float*>(smem + kRedOff);
  int* sidx = reinterpret_cast<int*>(smem + kIdxOff);

  const int tid = threadIdx.x;
  const int wg = tid >> 7;                  // warpgroup: keys [32wg, +32) of S, columns [256wg, +256) of O
  const int warp_in_wg = (tid & 127) >> 5;  // rows [16 warp_in_wg, +16) of every accumulator
  const int lane = tid & 31;
  const int row0 = warp_in_wg * 16 + (lane >> 2), row1 = row0 + 8;
  const int64_t t = blockIdx.x / head_groups;
  const int h0 = static_cast<int>(blockIdx.x % head_groups) * kHeadsPerCta;

  // Loader: thread tid copies rows ld_row and ld_row + 32, 16-byte chunks ld_c + 8b (b = 0..8):
  // 8 consecutive threads read one 128-byte span of a row.
  const int ld_row = tid >> 3, ld_c = tid & 7;
#pragma unroll
  for (int p = 0; p < 2; ++p) {
    const int r = ld_row + 32 * p;
    const bool valid = h0 + r < H;
    const __nv_bfloat16* src = q + ((t * H + (valid ? h0 + r : 0)) * kDqk + ld_c * 8);
#pragma unroll
    for (int b = 0; b < kDqk / 64; ++b) CpAsync16ZeroFillMem(sQ + SwizzledOffset(r, ld_c + 8 * b), src + 64 * b, valid);
  }

  const int32_t* idx_row = indices + t * topk;
  const int n_chunks = (topk + kKeysPerChunk - 1) / kKeysPerChunk;
  int next_idx[2];  // indices of this thread's two loader rows for the next chunk to issue
  auto load_idx = [&](int chunk) {
#pragma unroll
    for (int p = 0; p < 2; ++p) {
      const int j = chunk * kKeysPerChunk + ld_row + 32 * p;
      next_idx[p] = j < topk ? __ldg(idx_row + j) : -1;
    }
  };
  auto issue = [&](int stage) {
#pragma unroll
    for (int p = 0; p < 2; ++p) {
      const int r = ld_row + 32 * p;
      const int v = next_idx[p];
      const bool valid = v >= 0 && v < L;
      const __nv_bfloat16* src = kv + (static_cast<int64_t>(valid ? v : 0) * kDqk + ld_c * 8);
      const uint32_t dst = sKV + stage * kTileBytes;
#pragma unroll
      for (int b = 0; b < kDqk / 64; ++b) CpAsync16ZeroFillMem(dst + SwizzledOffset(r, ld_c + 8 * b), src + 64 * b, valid);
      if (ld_c == 0) sidx[stage * 64 + r] = valid ? v : -1;
    }
  };

  if (n_chunks > 0) {
    load_idx(0);
    issue(0);
    if (n_chunks > 1) load_idx(1);
  }
  CpAsyncCommitMem();

  float o[128];
#pragma unroll
  for (int i = 0; i < 128; ++i) o[i] = 0.f;
  float m0 = -INFINITY, m1 = -INFINITY;  // running row max (base-2 scaled logits), rows row0/row1
  float l0 = 0.f, l1 = 0.f;              // this thread's partial row sums

  for (int j = 0; j < n_chunks; ++j) {
    const int stage = j & 1;
    // Chunk j landed (own copies), made visible to wgmma, and everyone's copies done; also every
    // wgmma of chunk j-1 has completed in both WGs, so stage ^ 1 and sP are free.
    CpAsyncWaitAllMem();
    FenceProxyAsync();
    __syncthreads();

    // 1. S = Q K^T for this WG's 32 keys (asynchronous; the gather of chunk j+1 is issued while the
    // tensor cores work).
    const uint32_t kv_tile = sKV + stage * kTileBytes;
    float s[16];
#pragma unroll
    for (int i = 0; i < 16; ++i) s[i] = 0.f;
    FenceRegs(s);
    WgmmaFence();
#pragma unroll
    for (int b = 0; b < kDqk / 64; ++b) {
#pragma unroll
      for (int kk = 0; kk < 4; ++kk) {
        const uint64_t da = WgmmaDesc(sQ + b * kBlockBytes + kk * 32, 16, 1024);
        const uint64_t db = WgmmaDesc(kv_tile + b * kBlockBytes + wg * 32 * 128 + kk * 32, 16, 1024);
        WgmmaM64N32K16(s, da, db, (b | kk) != 0);
      }
    }
    WgmmaCommit();
    if (j + 1 < n_chunks) {
      issue(stage ^ 1);
      if (j + 2 < n_chunks) load_idx(j + 2);
    }
    CpAsyncCommitMem();
    WgmmaWaitAll();
    FenceRegs(s);

    // 2. Online softmax. Accumulator layout: s[4n + e] is row row0, s[4n + 2 + e] row row1, both at
    // column 8n + 2 (lane % 4) + e of this WG's 32 keys.
    const int* chunk_idx = sidx + stage * 64 + wg * 32;
    float mx0 = -INFINITY, mx1 = -INFINITY;
#pragma unroll
    for (int n = 0; n < 4; ++n) {
#pragma unroll
      for (int e = 0; e < 2; ++e) {
        const bool valid = chunk_idx[8 * n + 2 * (lane & 3) + e] >= 0;
        s[4 * n + e] = valid ? s[4 * n + e] * scale_log2 : -INFINITY;
        s[4 * n + 2 + e] = valid ? s[4 * n + 2 + e] * scale_log2 : -INFINITY;
        mx0 = fmaxf(mx0, s[4 * n + e]);
        mx1 = fmaxf(mx1, s[4 * n + 2 + e]);
      }
    }
    mx0 = fmaxf(mx0, __shfl_xor_sync(0xffffffffu, mx0, 1));
    mx0 = fmaxf(mx0, __shfl_xor_sync(0xffffffffu, mx0, 2));
    mx1 = fmaxf(mx1, __shfl_xor_sync(0xffffffffu, mx1, 1));
    mx1 = fmaxf(mx1, __shfl_xor_sync(0xffffffffu, mx1, 2));
    if ((lane & 3) == 0) {
      red[wg * 64 + row0] = mx0;
      red[wg * 64 + row1] = mx1;
    }
    __syncthreads();
    // The running max moves only when the chunk's max exceeds it by more than kMaxSlack (base 2):
    // exponents stay <= kMaxSlack (p <= 256, l <= 256 topk: no overflow) and O is rescaled rarely.
    // Exact either way: O, l and lse all use the same base. Both WGs compute the same base.
    constexpr float kMaxSlack = 8.f;
    const float cmax0 = fmaxf(red[row0], red[64 + row0]), cmax1 = fmaxf(red[row1], red[64 + row1]);
    const float new0 = (m0 == -INFINITY || cmax0 > m0 + kMaxSlack) ? cmax0 : m0;
    const float new1 = (m1 == -INFINITY || cmax1 > m1 + kMaxSlack) ? cmax1 : m1;
    const float base0 = new0 == -INFINITY ? 0.f : new0;  // no valid key yet: keep exp2 finite
    const float base1 = new1 == -INFINITY ? 0.f : new1;
    const float alpha0 = new0 == m0 ? 1.f : exp2f(m0 - base0), alpha1 = new1 == m1 ? 1.f : exp2f(m1 - base1);
    m0 = new0;
    m1 = new1;
    float sum0 = 0.f, sum1 = 0.f;
#pragma unroll
    for (int n = 0; n < 4; ++n) {
      const float p00 = exp2f(s[4 * n] - base0), p01 = exp2f(s[4 * n + 1] - base0);
      const float p10 = exp2f(s[4 * n + 2] - base1), p11 = exp2f(s[4 * n + 3] - base1);
      sum0 += p00 + p01;
      sum1 += p10 + p11;
      const int chunk = wg * 4 + n;  // 16-byte chunk of the 128-byte P row
      const uint32_t within = (lane & 3) * 4;
      StoreShared32(sP + row0 * 128 + ((chunk ^ (row0 & 7)) << 4) + within, PackBf16(p00, p01));
      StoreShared32(sP + row1 * 128 + ((chunk ^ (row1 & 7)) << 4) + within, PackBf16(p10, p11));
    }
    l0 = l0 * alpha0 + sum0;
    l1 = l1 * alpha1 + sum1;
    FenceProxyAsync();
    __syncthreads();

    // 3. O = O * alpha + P V for this WG's 256 value columns.
    if (__any_sync(0xffffffffu, alpha0 != 1.f || alpha1 != 1.f)) {
#pragma unroll
      for (int n = 0; n < 32; ++n) {
        o[4 * n] *= alpha0;
        o[4 * n + 1] *= alpha0;
        o[4 * n + 2] *= alpha1;
        o[4 * n + 3] *= alpha1;
      }
    }
    FenceRegs(o);
    WgmmaFence();
#pragma unroll
    for (int ks = 0; ks < kKeysPerChunk / 16; ++ks) {
      const uint64_t da = WgmmaDesc(sP + ks * 32, 16, 1024);
      const uint64_t db = WgmmaDesc(kv_tile + wg * 4 * kBlockBytes + ks * 16 * 128, kBlockBytes, 1024);
      WgmmaM64N256K16TransB(o, da, db, 1);
    }
    WgmmaCommit();
    WgmmaWaitAll();
    FenceRegs(o);
  }
  CpAsyncWaitAllMem();

  // Row sums: over the quad, then over the two WGs.
  l0 += __shfl_xor_sync(0xffffffffu, l0, 1);
  l0 += __shfl_xor_sync(0xffffffffu, l0, 2);
  l1 += __shfl_xor_sync(0xffffffffu, l1, 1);
  l1 += __shfl_xor_sync(0xffffffffu, l1, 2);
  __syncthreads();
  if ((lane & 3) == 0) {
    red[wg * 64 + row0] = l0;
    red[wg * 64 + row1] = l1;
  }
  __syncthreads();
  const float tot0 = red[row0] + red[64 + row0], tot1 = red[row1] + red[64 + row1];
  const float inv0 = tot0 > 0.f ? 1.f / tot0 : 0.f, inv1 = tot1 > 0.f ? 1.f / tot1 : 0.f;
  const int h_a = h0 + row0, h_b = h0 + row1;
  const int col_base = wg * 256 + 2 * (lane & 3);
  if (h_a < H) {
    uint32_t* dst = reinterpret_cast<uint32_t*>(out + (t * H + h_a) * kDv + col_base);
#pragma unroll
    for (int n = 0; n < 32; ++n) dst[4 * n] = PackBf16(o[4 * n] * inv0, o[4 * n + 1] * inv0);
  }
  if (h_b < H) {
    uint32_t* dst = reinterpret_cast<uint32_t*>(out + (t * H + h_b) * kDv + col_base);
#pragma unroll
    for (int n = 0; n < 32; ++n) dst[4 * n] = PackBf16(o[4 * n + 2] * inv1, o[4 * n + 3] * inv1);
  }
  if (lse != nullptr && wg == 0 && (lane & 3) == 0) {
    constexpr float kLn2 = 0.69314718055994531f;
    if (h_a < H) lse[t * H + h_a] = tot0 > 0.f ? (m0 + log2f(tot0)) * kLn2 : INFINITY;
    if (h_b < H) lse[t * H + h_b] = tot1 > 0.f ? (m1 + log2f(tot1)) * kLn2 : INFINITY;
  }
}

#else  // !SPARSE_MLA_HAS_WGMMA

__global__ void SparseMlaKernel(const __nv_bfloat16*, const __nv_bfloat16*, const int32_t*, int, int, int, int, float,
                                __nv_bfloat16*, float*) {
  __trap();
}

#endif  // SPARSE_MLA_HAS_WGMMA

bool Aligned16(const void* p) { return reinterpret_cast<uintptr_t>(p) % 16 == 0; }

[[noreturn]] void Unsupported(const char* what) {
  std::fprintf(stderr, "SparseMlaCuda: unsupported arguments: %s\n", what);
  std::abort();
}

}  // namespace

void SparseMlaCuda(const SparseMlaCudaParams& p, cudaStream_t stream) {
  if (p.d_qk != kDqk || p.d_v != kDv) Unsupported("d_qk must be 576 and d_v 512");
  if (p.T < 0 || p.H < 0 || p.L < 0 || p.topk < 0) Unsupported("negative size");
  if (p.T == 0 || p.H == 0) return;
  if (p.L > INT32_MAX || p.H > INT32_MAX || p.topk > INT32_MAX) Unsupported("size beyond int32");
  if (p.kv_fp8 != nullptr) {
    if (p.kv != nullptr) Unsupported("set kv or kv_fp8, not both");
    if (p.variant != SparseMlaVariant::kWarpSpecialized) Unsupported("FP8 latents need the warp-specialised kernel");
    if (!(p.scale > 0.f)) Unsupported("FP8 latents need scale > 0");
    if (!Aligned16(p.kv_fp8)) Unsupported("kv_fp8 must be 16-byte aligned");
  } else if (!Aligned16(p.kv)) {
    Unsupported("kv must be 16-byte aligned");
  }
  if (!Aligned16(p.q) || !Aligned16(p.out)) Unsupported("q and out must be 16-byte aligned");
  const int64_t head_groups = (p.H + kHeadsPerCta - 1) / kHeadsPerCta;
  if (p.T * head_groups > INT32_MAX) Unsupported("too many (token, head group) blocks");
  switch (p.variant) {
    case SparseMlaVariant::kTwoWarpgroups:
      sparse_mla::LaunchTwoWarpgroups(p, stream);
      return;
    case SparseMlaVariant::kWarpSpecialized:
      sparse_mla::LaunchWarpSpecialized(p, stream);
      return;
  }
  Unsupported("unknown variant");
}

namespace sparse_mla {

void LaunchTwoWarpgroups(const SparseMlaCudaParams& p, cudaStream_t stream) {
  const int64_t head_groups = (p.H + kHeadsPerCta - 1) / kHeadsPerCta;
  CUDA_CHECK(cudaFuncSetAttribute(SparseMlaKernel, cudaFuncAttributeMaxDynamicSharedMemorySize, kSmemBytes));
  constexpr float kLog2e = 1.4426950408889634f;
  SparseMlaKernel<<<static_cast<unsigned>(p.T * head_groups), kThreads, kSmemBytes, stream>>>(
      p.q, p.kv, p.indices, static_cast<int>(p.H), static_cast<int>(p.L), static_cast<int>(p.topk),
      static_cast<int>(head_groups), p.scale * kLog2e, p.out, p.lse);
  CUDA_CHECK(cudaGetLastError());
}

}  // namespace sparse_mla
}  // namespace indexcache
