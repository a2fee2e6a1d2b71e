// The warp-specialised sparse MLA's sizes and shared-memory plan (kernels/sparse_mla_ws_cuda.cu,
// whose header comment describes the kernel), shared with its FP8 loader
// (kernels/sparse_mla_ws_fp8_loader.cuh). Device code only: included from those .cu files.
#pragma once

#include <cstdint>

namespace indexcache {
namespace sparse_mla {
namespace ws {

// ([[maybe_unused]]: the compute_90 pass, which only traps, does not use them.)
constexpr int kDqk = 576;
[[maybe_unused]] constexpr int kDv = 512;
constexpr int kHeads = 64;                      // heads per CTA
[[maybe_unused]] constexpr int kBlockKeys = 64;  // keys per block; blocks go in pairs
constexpr int kThreads = 384;
constexpr int kColBlocks = kDqk / 64;                     // 9 column blocks of 64
constexpr int kBlockBytes = 64 * 128;                     // 64 rows x 64 bf16 columns, 128-byte swizzle
constexpr int kTileBytes = kColBlocks * kBlockBytes;      // 73728: 64 rows x 576 columns
[[maybe_unused]] constexpr int kLeftBlocks = 4;           // half 0: column blocks [0, 4); half 1: [4, 9)


// Shared memory plan (offsets from a 1024-byte-aligned base).
struct WsPlan {
  static constexpr int kQ = 0;                            // Q, 64 heads x 576
  static constexpr int kKv = kQ + kTileBytes;             // 2 stages x 64 keys x 576
  static constexpr int kP1 = kKv + 2 * kTileBytes;        // WG1's P, 64 x 64 bf16
  static constexpr int kM = kP1 + kBlockBytes;            // float[64]: running max exchange
  static constexpr int kL = kM + 64 * 4;                  // float[2][64]: row sums at the end
  static constexpr int kBars = kL + 2 * 64 * 4;           // 9 mbarriers
  static constexpr int kLandedBars = kBars + 16 * 8;      // FP8 loader: 4 warps x 4 half-stages
  static constexpr int kUsed = kLandedBars + 16 * 8;
  static constexpr int kBytes = kUsed + 1024;             // slack to align the base
  // WG0's P lives in stage 0's RoPE block (column block 8).
  static constexpr int kP0 = kKv + 8 * kBlockBytes;
  __host__ __device__ static constexpr int QBar() { return kBars; }
  __host__ __device__ static constexpr int Ready(int stage, int half) { return kBars + 8 * (1 + 2 * stage + half); }
  __host__ __device__ static constexpr int Free(int stage, int half) { return kBars + 8 * (5 + 2 * stage + half); }
  // A loader warp's copies of one half-stage have landed (FP8 path; 32 cp.async arrivals).
  __host__ __device__ static constexpr int Landed(int warp, int stage, int half) {
    return kLandedBars + 8 * (4 * warp + 2 * stage + half);
  }
};
static_assert(WsPlan::kBytes <= 227 * 1024, "shared memory budget");

}  // namespace ws
}  // namespace sparse_mla
}  // namespace indexcache
