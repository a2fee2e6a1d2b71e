// Sum of squares in two passes. Pass 1: `blocks` blocks (a function of n only, at most
// kSumOfSquaresWorkspace) of kThreads threads; thread t of block b sums x[i]^2 over
// i = b*kThreads + t + k*blocks*kThreads in increasing k, then the block reduces its threads
// with a fixed shuffle tree into workspace[b]. Pass 2: one block reduces workspace[0..blocks) the
// same way. No atomics, so the order of every addition is fixed.
#include "optim/clip_cuda.h"

#include <cstdint>

#include "core/cuda_check.h"

namespace indexcache {
namespace {

constexpr int kThreads = 1024;
constexpr int kWarps = kThreads / 32;
// Each pass-1 thread handles at least this many elements (4 loads in flight per iteration).
constexpr int64_t kMinPerThread = 16;

template <typename Acc>
__device__ __forceinline__ Acc WarpSum(Acc v) {
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}

// Block-wide sum in a fixed order; the result is valid in thread 0. blockDim.x == kThreads.
template <typename Acc>
__device__ __forceinline__ Acc BlockSum(Acc v) {
  __shared__ Acc warp_sums[kWarps];
  v = WarpSum(v);
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  if (lane == 0) warp_sums[warp] = v;
  __syncthreads();
  Acc total = 0;
  if (warp == 0) total = WarpSum(lane < kWarps ? warp_sums[lane] : Acc(0));
  return total;
}

template <typename Acc>
__device__ __forceinline__ Acc Square(float x) {
  const Acc a = static_cast<Acc>(x);
  return a * a;
}

template <typename Acc>
__global__ void __launch_bounds__(kThreads) SumSquaresPartialKernel(const float* __restrict__ x, int64_t n,
                                                                      Acc* __restrict__ partial) {
  const int64_t stride = static_cast<int64_t>(gridDim.x) * kThreads;
  int64_t i = static_cast<int64_t>(blockIdx.x) * kThreads + threadIdx.x;
  Acc s = 0;
  // Four independent loads per iteration, added in index order.
  for (; i + 3 * stride < n; i += 4 * stride) {
    const float a = x[i], b = x[i + stride], c = x[i + 2 * stride], d = x[i + 3 * stride];
    s += Square<Acc>(a);
    s += Square<Acc>(b);
    s += Square<Acc>(c);
    s += Square<Acc>(d);
  }
  for (; i < n; i += stride) s += Square<Acc>(x[i]);
  const Acc total = BlockSum(s);
  if (threadIdx.x == 0) partial[blockIdx.x] = total;
}

template <typename Acc>
__global__ void __launch_bounds__(kThreads) SumSquaresFinalKernel(const Acc* __restrict__ partial, int blocks,
                                                                    Acc* __restrict__ out, bool accumulate) {
  // blocks <= kSumOfSquaresWorkspace == kThreads: one value per thread.
  const Acc v = threadIdx.x < blocks ? partial[threadIdx.x] : Acc(0);
  const Acc total = BlockSum(v);
  if (threadIdx.x == 0) *out = accumulate ? *out + total : total;
}

__global__ void ScaleKernel(float* __restrict__ x, int64_t n, float scale) {
  const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i < n) x[i] = __fmul_rn(x[i], scale);
}

static_assert(kSumOfSquaresWorkspace <= kThreads, "pass 2 reads one partial sum per thread");

}  // namespace

template <typename Acc>
void SumOfSquaresCuda(const float* x, int64_t n, Acc* out, Acc* workspace, bool accumulate, cudaStream_t stream) {
  if (n < 0) n = 0;
  const int64_t per_block = kThreads * kMinPerThread;
  int64_t blocks = (n + per_block - 1) / per_block;
  if (blocks < 1) blocks = 1;
  if (blocks > kSumOfSquaresWorkspace) blocks = kSumOfSquaresWorkspace;
  SumSquaresPartialKernel<Acc><<<static_cast<unsigned>(blocks), kThreads, 0, stream>>>(x, n, workspace);
  CUDA_CHECK(cudaGetLastError());
  SumSquaresFinalKernel<Acc><<<1, kThreads, 0, stream>>>(workspace, static_cast<int>(blocks), out, accumulate);
  CUDA_CHECK(cudaGetLastError());
}

template void SumOfSquaresCuda<double>(const float*, int64_t, double*, double*, bool, cudaStream_t);
template void SumOfSquaresCuda<float>(const float*, int64_t, float*, float*, bool, cudaStream_t);

void ScaleGradientCuda(float* x, int64_t n, float scale, cudaStream_t stream) {
  if (n <= 0) return;
  constexpr int kScaleThreads = 256;
  ScaleKernel<<<static_cast<unsigned>((n + kScaleThreads - 1) / kScaleThreads), kScaleThreads, 0, stream>>>(
      x, n, scale);
  CUDA_CHECK(cudaGetLastError());
}

}  // namespace indexcache
