// Gradient-norm pieces on the GPU (mirror optim/clip.h; SumOfSquares and ScaleInPlace are the
// references): a deterministic sum of squares and an in-place scale.
//
// Global-norm clipping of device buffers g_0..g_k:
//   for each i: SumOfSquaresCuda(g_i, n_i, d_total, d_work, /*accumulate=*/i > 0, stream);
//   copy *d_total to the host; norm = sqrt(total);      (skip the step if it is not finite)
//   coef = ClipCoefficient(norm, max_norm);             (optim/clip.h)
//   if (coef != 1) for each i: ScaleGradientCuda(g_i, n_i, coef, stream);
#pragma once

#include <cstdint>

#include <cuda_runtime_api.h>

namespace indexcache {

// Elements of the workspace SumOfSquaresCuda needs (of its accumulator type).
constexpr int kSumOfSquaresWorkspace = 1024;

// *out = sum(x[i]^2) (or *out += that, with accumulate), x: n fp32 values in device memory; out
// and workspace (kSumOfSquaresWorkspace values) in device memory. Acc = double (squares and sums
// in fp64) or float. Deterministic: two passes (fixed per-block partial sums, then one block
// adding them in a fixed order) whose grid depends only on n, so the result is bitwise the same
// run to run and device to device. Asynchronous on `stream`.
template <typename Acc>
void SumOfSquaresCuda(const float* x, int64_t n, Acc* out, Acc* workspace, bool accumulate, cudaStream_t stream);

extern template void SumOfSquaresCuda<double>(const float*, int64_t, double*, double*, bool, cudaStream_t);
extern template void SumOfSquaresCuda<float>(const float*, int64_t, float*, float*, bool, cudaStream_t);

// x[i] *= scale in fp32, x: n values in device memory. Asynchronous on `stream`.
void ScaleGradientCuda(float* x, int64_t n, float scale, cudaStream_t stream);

}  // namespace indexcache
