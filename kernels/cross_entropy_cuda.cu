// Cross-entropy rows: one 256-thread block per row, ONE read of the row. Each thread keeps an
// online log-sum-exp state (running max m, sum s of exp(x - m)), rescaling s when the max grows;
// the block then merges the states. Rows whose start is 16-byte aligned are read as float4 (the
// max of four first, so one rescale per four logits: 1.25 exponentials per logit). A row is
// memory-bound: the floor is one read of its 4-byte logits at the copy bandwidth.
#include "kernels/cross_entropy_cuda.h"

#include <cfloat>
#include <cstdint>

#include "core/cuda_check.h"

namespace indexcache {
namespace {

constexpr int kThreads = 256;

// An online log-sum-exp state: the sum of exp(x - m) over the values seen, m their max.
struct Lse {
  float m = -FLT_MAX;
  float s = 0.f;
};

// Adds `count` values whose max is `vmax`, given as the sum of their exp(x - vmax).
__device__ __forceinline__ void AddShifted(Lse& a, float vmax, float shifted_sum) {
  const float m = fmaxf(a.m, vmax);
  a.s = a.s * __expf(a.m - m) + shifted_sum * __expf(vmax - m);
  a.m = m;
}

__device__ __forceinline__ void Add1(Lse& a, float x) {
  if (x > a.m) {
    a.s = a.s * __expf(a.m - x) + 1.f;
    a.m = x;
  } else {
    a.s += __expf(x - a.m);
  }
}

__device__ __forceinline__ void Add4(Lse& a, float4 v) {
  const float vmax = fmaxf(fmaxf(v.x, v.y), fmaxf(v.z, v.w));
  if (vmax > a.m) {
    a.s *= __expf(a.m - vmax);
    a.m = vmax;
  }
  a.s += __expf(v.x - a.m) + __expf(v.y - a.m) + __expf(v.z - a.m) + __expf(v.w - a.m);
}

// The block's merged state, on every thread. The cross-thread sums run in fp64.
__device__ void BlockMerge(Lse a, float* m_out, double* s_out) {
  __shared__ float ms[kThreads / 32];
  __shared__ double ss[kThreads / 32];
  float m = a.m;
  for (int o = 16; o > 0; o >>= 1) m = fmaxf(m, __shfl_xor_sync(0xffffffffu, m, o));
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  if (lane == 0) ms[warp] = m;
  __syncthreads();
  float block_max = ms[0];
  for (int w = 1; w < kThreads / 32; ++w) block_max = fmaxf(block_max, ms[w]);
  // exp(-FLT_MAX - block_max) is 0: threads that saw no value add nothing.
  double s = static_cast<double>(a.s) * exp(static_cast<double>(a.m) - static_cast<double>(block_max));
  for (int o = 16; o > 0; o >>= 1) s += __shfl_xor_sync(0xffffffffu, s, o);
  if (lane == 0) ss[warp] = s;
  __syncthreads();
  double total = 0.0;
  for (int w = 0; w < kThreads / 32; ++w) total += ss[w];
  *m_out = block_max;
  *s_out = total;
}

__global__ void __launch_bounds__(kThreads)
    CrossEntropyKernel(const float* __restrict__ logits, const int32_t* __restrict__ targets, int64_t vocab,
                       double* __restrict__ nll) {
  const float* row = logits + static_cast<int64_t>(blockIdx.x) * vocab;
  Lse a;
  // NaN compares false everywhere, so the running max never takes it: track it separately so a
  // bad row comes back NaN instead of a finite wrong loss.
  bool nan = false;
  // Scalar head up to the first 16-byte boundary, float4 body, scalar tail.
  const int64_t misalign = (reinterpret_cast<uintptr_t>(row) / sizeof(float)) % 4;
  const int64_t head = misalign ? std::min<int64_t>(4 - misalign, vocab) : 0;
  const int64_t body4 = (vocab - head) / 4;
  for (int64_t v = threadIdx.x; v < head; v += kThreads) {
    const float x = row[v];
    nan |= x != x;
    Add1(a, x);
  }
  const float4* body = reinterpret_cast<const float4*>(row + head);
  for (int64_t i = threadIdx.x; i < body4; i += kThreads) {
    const float4 x = body[i];
    nan |= (x.x != x.x) | (x.y != x.y) | (x.z != x.z) | (x.w != x.w);
    Add4(a, x);
  }
  for (int64_t v = head + 4 * body4 + threadIdx.x; v < vocab; v += kThreads) {
    const float x = row[v];
    nan |= x != x;
    Add1(a, x);
  }
  float m;
  double total;
  BlockMerge(a, &m, &total);
  const int any_nan = __syncthreads_or(nan);
  if (threadIdx.x == 0) {
    const double value = static_cast<double>(m) + log(total) - static_cast<double>(row[targets[blockIdx.x]]);
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
