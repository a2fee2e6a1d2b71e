#include "optim/clip.h"

#include <algorithm>
#include <cmath>

namespace indexcache {
namespace {

// Fixed chunk: partial sums depend only on n, never on the thread count.
constexpr int64_t kChunk = 1 << 16;
// Below this many elements a single thread is faster than waking the team.
constexpr int64_t kParallelMin = 1 << 18;

}  // namespace

double SumOfSquares(const float* x, int64_t n) {
  if (n <= 0) return 0.0;
  const int64_t chunks = (n + kChunk - 1) / kChunk;
  std::vector<double> partial(chunks);
#pragma omp parallel for schedule(static) if (n >= kParallelMin)
  for (int64_t c = 0; c < chunks; ++c) {
    const int64_t begin = c * kChunk, end = std::min(n, begin + kChunk);
    double s = 0.0;
    for (int64_t i = begin; i < end; ++i) s += static_cast<double>(x[i]) * static_cast<double>(x[i]);
    partial[c] = s;
  }
  double total = 0.0;
  for (double s : partial) total += s;
  return total;
}

double GlobalGradNorm(const std::vector<FloatSpan>& grads) {
  double total = 0.0;
  for (const FloatSpan& g : grads) total += SumOfSquares(g.data, g.size);
  return std::sqrt(total);
}

bool AnyNonFinite(const std::vector<FloatSpan>& grads) {
  for (const FloatSpan& g : grads) {
    bool bad = false;
#pragma omp parallel for schedule(static) reduction(|| : bad) if (g.size >= kParallelMin)
    for (int64_t i = 0; i < g.size; ++i) bad = bad || !std::isfinite(g.data[i]);
    if (bad) return true;
  }
  return false;
}

float ClipCoefficient(double norm, double max_norm) {
  if (!(max_norm > 0) || !std::isfinite(norm)) return 1.0f;
  const double coef = max_norm / (norm + kClipNormEps);
  return coef < 1.0 ? static_cast<float>(coef) : 1.0f;
}

void ScaleInPlace(float* x, int64_t n, float scale) {
#pragma omp parallel for schedule(static) if (n >= kParallelMin)
  for (int64_t i = 0; i < n; ++i) x[i] *= scale;
}

double ClipGradNorm(const std::vector<FloatSpan>& grads, double max_norm) {
  const double norm = GlobalGradNorm(grads);
  const float coef = ClipCoefficient(norm, max_norm);
  if (coef != 1.0f) {
    for (const FloatSpan& g : grads) ScaleInPlace(g.data, g.size, coef);
  }
  return norm;
}

}  // namespace indexcache
