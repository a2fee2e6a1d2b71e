// Next-token cross-entropy of logit rows: the language-model loss that eval and the pattern search
// reduce over, CPU reference. kernels/cross_entropy_cuda.h is the GPU version (same contract).
#pragma once

#include <cstdint>

namespace indexcache {

// nll[r] = logsumexp(logits[r, :]) - logits[r, targets[r]] for r in [0, rows), in fp64 with a
// max-shifted sum. logits: [rows, vocab] f32 row-major; every target in [0, vocab) (the caller's
// invariant). A row holding NaN or +-Inf gives a non-finite nll, which callers report.
void CrossEntropyRowsCpu(const float* logits, const int32_t* targets, int64_t rows, int64_t vocab, double* nll);

}  // namespace indexcache
