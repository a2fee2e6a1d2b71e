// Global gradient-norm clipping on host fp32 buffers, as torch.nn.utils.clip_grad_norm_ does it
// (L2 norm over all buffers together), with the norm accumulated in fp64.
//
// Everything here is deterministic: sums run over fixed-size chunks whose partial sums are added
// in chunk order, so the result does not depend on the number of OpenMP threads.
#pragma once

#include <cstdint>
#include <vector>

#include "optim/span.h"

namespace indexcache {

// Epsilon added to the norm in the clip coefficient, as in PyTorch.
constexpr double kClipNormEps = 1e-6;

// sum(x[i]^2), each square and the sum in fp64.
double SumOfSquares(const float* x, int64_t n);

// sqrt of the sum of squares over all buffers (fp64 throughout).
double GlobalGradNorm(const std::vector<FloatSpan>& grads);

// True when any value of any buffer is NaN or +-Inf (the trainer skips such steps).
bool AnyNonFinite(const std::vector<FloatSpan>& grads);

// The factor clipping multiplies every gradient by: min(1, max_norm / (norm + 1e-6)), computed in
// fp64 and rounded to fp32 once (the CUDA path uses the same value). 1 when max_norm <= 0
// (clipping off) or the norm is not finite.
float ClipCoefficient(double norm, double max_norm);

// x[i] *= scale in fp32.
void ScaleInPlace(float* x, int64_t n, float scale);

// Computes the global norm and, when max_norm > 0 and the norm exceeds it, scales every buffer by
// ClipCoefficient(norm, max_norm); buffers are untouched when the coefficient is 1 (below the
// max, clipping off, or a NaN/Inf norm: check the returned value and skip the step). Returns the
// pre-clip norm.
double ClipGradNorm(const std::vector<FloatSpan>& grads, double max_norm);

}  // namespace indexcache
