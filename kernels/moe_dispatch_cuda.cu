#include "kernels/moe_dispatch_cuda.h"

#include <cub/device/device_radix_sort.cuh>

#include <cstdio>
#include <cstdlib>

#include "core/cuda_check.h"

namespace indexcache {
namespace {

using bf16 = __nv_bfloat16;

constexpr int kThreads = 256;
constexpr int kMaxK = 64;

unsigned Blocks(int64_t n) { return static_cast<unsigned>((n + kThreads - 1) / kThreads); }

// Bits the radix sort must look at: expert ids are < E, so higher bits are zero (fewer passes).
int KeyBits(int64_t E) {
  int bits = 1;
  while ((int64_t{1} << bits) < E) ++bits;
  return bits;
}

size_t Align(size_t n) { return (n + 255) / 256 * 256; }

// The workspace: sorted keys [n], the assignment indices 0..n-1 [n], then CUB's temporary storage.
size_t CubTempBytes(int64_t n, int64_t E) {
  size_t bytes = 0;
  CUDA_CHECK(cub::DeviceRadixSort::SortPairs(nullptr, bytes, static_cast<const int32_t*>(nullptr),
                                             static_cast<int32_t*>(nullptr), static_cast<const int32_t*>(nullptr),
                                             static_cast<int32_t*>(nullptr), static_cast<int>(n), 0, KeyBits(E)));
  return bytes;
}

__global__ void IotaKernel(int32_t* v, int64_t n) {
  const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i < n) v[i] = static_cast<int32_t>(i);
}

// offsets[e] = the first position whose key is >= e (a lower bound), for e in [0, E].
__global__ void OffsetsKernel(const int32_t* sorted, int64_t n, int64_t E, int32_t* offsets) {
  const int64_t e = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (e > E) return;
  int64_t lo = 0, hi = n;
  while (lo < hi) {
    const int64_t mid = (lo + hi) / 2;
    if (sorted[mid] < e) lo = mid + 1; else hi = mid;
  }
  offsets[e] = static_cast<int32_t>(lo);
}

__global__ void InverseKernel(const int32_t* order, int64_t n, int32_t* inverse) {
  const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i < n) inverse[order[i]] = static_cast<int32_t>(i);
}

// One block per permuted row; `Vec` is uint4 (8 bf16) or bf16.
template <typename Vec>
__global__ void GatherKernel(const Vec* x, const int32_t* order, int64_t k, int64_t vecs, Vec* y) {
  const int64_t i = blockIdx.x;
  const Vec* src = x + (order[i] / k) * vecs;
  Vec* dst = y + i * vecs;
  for (int64_t c = threadIdx.x; c < vecs; c += blockDim.x) dst[c] = src[c];
}

// One block per token. __fmul_rn / __fadd_rn forbid the fused multiply-add the compiler would
// otherwise form, so each product is rounded before it is added, exactly as MoeCombineCpu does.
template <int kVec>
__global__ void CombineKernel(const bf16* rows, const int32_t* inverse, const float* weights, int64_t k,
                              int64_t cols, bf16* y) {
  __shared__ int64_t row[kMaxK];
  __shared__ float w[kMaxK];
  const int64_t t = blockIdx.x;
  for (int j = threadIdx.x; j < k; j += blockDim.x) {
    row[j] = static_cast<int64_t>(inverse[t * k + j]) * cols;
    w[j] = weights[t * k + j];
  }
  __syncthreads();
  for (int64_t c0 = static_cast<int64_t>(threadIdx.x) * kVec; c0 < cols; c0 += static_cast<int64_t>(blockDim.x) * kVec) {
    float acc[kVec];
    for (int v = 0; v < kVec; ++v) acc[v] = 0.0f;
    for (int j = 0; j < k; ++j) {
      bf16 in[kVec];
      if constexpr (kVec == 8) {
        *reinterpret_cast<uint4*>(in) = *reinterpret_cast<const uint4*>(rows + row[j] + c0);
      } else {
        in[0] = rows[row[j] + c0];
      }
      for (int v = 0; v < kVec; ++v) acc[v] = __fadd_rn(acc[v], __fmul_rn(w[j], __bfloat162float(in[v])));
    }
    bf16* out = y + t * cols + c0;
    bf16 res[kVec];
    if constexpr (kVec == 8) *reinterpret_cast<uint4*>(res) = *reinterpret_cast<const uint4*>(out);
    else res[0] = out[0];
    for (int v = 0; v < kVec; ++v) res[v] = __float2bfloat16_rn(__fadd_rn(__bfloat162float(res[v]), acc[v]));
    if constexpr (kVec == 8) *reinterpret_cast<uint4*>(out) = *reinterpret_cast<const uint4*>(res);
    else out[0] = res[0];
  }
}

bool Aligned16(const void* p) { return reinterpret_cast<uintptr_t>(p) % 16 == 0; }

}  // namespace

size_t MoeGroupByExpertCudaWorkspaceBytes(int64_t n, int64_t E) {
  return 2 * Align(static_cast<size_t>(n) * sizeof(int32_t)) + Align(CubTempBytes(n, E));
}

void MoeGroupByExpertCuda(const int32_t* experts, int64_t n, int64_t E, int32_t* order, int32_t* inverse,
                          int32_t* offsets, void* workspace, size_t workspace_bytes, cudaStream_t stream) {
  if (workspace_bytes < MoeGroupByExpertCudaWorkspaceBytes(n, E)) {
    std::fprintf(stderr, "MoeGroupByExpertCuda: workspace of %zu bytes is too small\n", workspace_bytes);
    std::abort();
  }
  char* ws = static_cast<char*>(workspace);
  int32_t* sorted_keys = reinterpret_cast<int32_t*>(ws);
  int32_t* assignment = reinterpret_cast<int32_t*>(ws + Align(n * sizeof(int32_t)));
  void* temp = ws + 2 * Align(n * sizeof(int32_t));
  size_t temp_bytes = CubTempBytes(n, E);
  if (n > 0) {
    IotaKernel<<<Blocks(n), kThreads, 0, stream>>>(assignment, n);
    CUDA_CHECK(cub::DeviceRadixSort::SortPairs(temp, temp_bytes, experts, sorted_keys, assignment, order,
                                               static_cast<int>(n), 0, KeyBits(E), stream));
    InverseKernel<<<Blocks(n), kThreads, 0, stream>>>(order, n, inverse);
  }
  OffsetsKernel<<<Blocks(E + 1), kThreads, 0, stream>>>(sorted_keys, n, E, offsets);
  CUDA_CHECK(cudaGetLastError());
}

void MoeGatherCuda(const bf16* x, const int32_t* order, int64_t n, int64_t k, int64_t cols, bf16* y,
                   cudaStream_t stream) {
  if (n == 0) return;
  if (cols % 8 == 0 && Aligned16(x) && Aligned16(y)) {
    GatherKernel<uint4><<<static_cast<unsigned>(n), kThreads, 0, stream>>>(
        reinterpret_cast<const uint4*>(x), order, k, cols / 8, reinterpret_cast<uint4*>(y));
  } else {
    GatherKernel<bf16><<<static_cast<unsigned>(n), kThreads, 0, stream>>>(x, order, k, cols, y);
  }
  CUDA_CHECK(cudaGetLastError());
}

void MoeCombineCuda(const bf16* rows, const int32_t* inverse, const float* weights, int64_t T, int64_t k,
                    int64_t cols, bf16* y, cudaStream_t stream) {
  if (k > kMaxK) {
    std::fprintf(stderr, "MoeCombineCuda: k = %lld > %d\n", static_cast<long long>(k), kMaxK);
    std::abort();
  }
  if (T == 0) return;
  if (cols % 8 == 0 && Aligned16(rows) && Aligned16(y)) {
    CombineKernel<8><<<static_cast<unsigned>(T), kThreads, 0, stream>>>(rows, inverse, weights, k, cols, y);
  } else {
    CombineKernel<1><<<static_cast<unsigned>(T), kThreads, 0, stream>>>(rows, inverse, weights, k, cols, y);
  }
  CUDA_CHECK(cudaGetLastError());
}

}  // namespace indexcache
