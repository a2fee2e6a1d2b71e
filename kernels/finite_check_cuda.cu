#include "kernels/finite_check_cuda.h"

#include <algorithm>

#include "core/cuda_check.h"

namespace indexcache {

namespace {

constexpr int kThreads = 256;
constexpr int64_t kMaxBlocks = 1024;

// Exponent bits all ones: Inf or NaN, in either format. Bit tests need no float conversion.
__device__ __forceinline__ bool NonFinite(uint16_t bf16) { return (bf16 & 0x7f80u) == 0x7f80u; }
__device__ __forceinline__ bool NonFinite(uint32_t f32) { return (f32 & 0x7f800000u) == 0x7f800000u; }

template <typename Bits>
__global__ void NoteNonFiniteKernel(const Bits* x, int64_t n, int32_t tag, int32_t* flag) {
  bool bad = false;
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < n && !bad; i += int64_t{gridDim.x} * blockDim.x) {
    bad = NonFinite(x[i]);
  }
  // One atomic per warp that saw a bad value.
  if (__any_sync(0xffffffffu, bad) && (threadIdx.x % 32) == 0) atomicMin(flag, tag);
}

}  // namespace

void NoteNonFiniteCuda(const void* x, bool is_bf16, int64_t n, int32_t tag, int32_t* flag, cudaStream_t stream) {
  if (n <= 0) return;
  const int64_t blocks = std::min<int64_t>(kMaxBlocks, (n + kThreads - 1) / kThreads);
  if (is_bf16) {
    NoteNonFiniteKernel<<<static_cast<unsigned>(blocks), kThreads, 0, stream>>>(static_cast<const uint16_t*>(x), n, tag, flag);
  } else {
    NoteNonFiniteKernel<<<static_cast<unsigned>(blocks), kThreads, 0, stream>>>(static_cast<const uint32_t*>(x), n, tag, flag);
  }
  CUDA_CHECK(cudaGetLastError());
}

}  // namespace indexcache
