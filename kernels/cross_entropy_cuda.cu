// Cross-entropy rows: one 256-thread block per row. The row is read twice (max, then the shifted
// exponential sum); the second pass mostly hits L2 for vocabularies up to a few hundred thousand.
// A row is memory-bound: 4 bytes per logit read twice at most, so the floor is the copy bandwidth.
#include "kernels/cross_entropy_cuda.h"

#include <cfloat>

#include "core/cuda_check.h"

namespace indexcache {
namespace {

constexpr int kThreads = 256;

template <typename T, typename Op>
__device__ T BlockReduce(T v, Op op, T* scratch) {
  for (int o = 16; o > 0; o >>= 1) v = op(v, __shfl_xor_sync(0xffffffffu, v, o));
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  if (lane == 0) scratch[warp] = v;
  __syncthreads();
  T total = scratch[0];
  for (int w = 1; w < kThreads / 32; ++w) total = op(total, scratch[w]);
  __syncthreads();  // scratch is reused by the next reduction
  return total;
}

__global__ void __launch_bounds__(kThreads)
    CrossEntropyKernel(const float* __restrict__ logits, const int32_t* __restrict__ targets, int64_t vocab,
                       double* __restrict__ nll) {
  __shared__ float fscratch[kThreads / 32];
  __shared__ double dscratch[kThreads / 32];
  const float* row = logits + blockIdx.x * vocab;
  // NaN propagates through fmaxf only when both are NaN; track it separately so a bad row is seen.
  float mx = -FLT_MAX;
  bool nan = false;
  for (int64_t v = threadIdx.x; v < vocab; v += kThreads) {
    const float x = row[v];
    nan |= x != x;
    mx = fmaxf(mx, x);
  }
  mx = BlockReduce(mx, [](float a, float b) { return fmaxf(a, b); }, fscratch);
  float s = 0.f;
  for (int64_t v = threadIdx.x; v < vocab; v += kThreads) s += __expf(row[v] - mx);
  const double total = BlockReduce(static_cast<double>(s), [](double a, double b) { return a + b; }, dscratch);
  const int any_nan = __syncthreads_or(nan);
  if (threadIdx.x == 0) {
    const double value = static_cast<double>(mx) + log(total) - static_cast<double>(row[targets[blockIdx.x]]);
    nll[blockIdx.x] = any_nan ? __longlong_as_double(0x7ff8000000000000ULL) : value;
  }
}

}  // namespace

void CrossEntropyRowsCuda(const float* logits, const int32_t* targets, int64_t rows, int64_t vocab, double* nll,
                          cudaStream_t stream) {
  // rows <= 2^31 - 1 (the grid's limit) is the caller's invariant: the model feeds row chunks of
  // at most 2^28 logits.
  if (rows <= 0 || vocab <= 0) return;
  CrossEntropyKernel<<<static_cast<unsigned>(rows), kThreads, 0, stream>>>(logits, targets, vocab, nll);
  CUDA_CHECK(cudaGetLastError());
}

}  // namespace indexcache
