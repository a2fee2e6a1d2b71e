// Next-token cross-entropy on the GPU (mirrors kernels/cross_entropy.h; CrossEntropyRowsCpu is the
// reference). Keeps [T, vocab] logits on the device: eval and search copy back one double per row
// instead of the whole logit matrix (17 GB at 32K tokens x 129K vocabulary).
#pragma once

#include <cstdint>

#include <cuda_runtime_api.h>

namespace indexcache {

// nll[r] = logsumexp(logits[r, :]) - logits[r, targets[r]], r in [0, rows). logits [rows, vocab]
// f32, targets [rows] int32 in [0, vocab), nll [rows] f64: device arrays. One block per row, one
// read of it: an online max and sum of exp(x - max) in fp32 per thread, merged in fp64 across the
// block. A row holding NaN gives NaN.
// rows < 2^31. Asynchronous on `stream`.
void CrossEntropyRowsCuda(const float* logits, const int32_t* targets, int64_t rows, int64_t vocab, double* nll,
                          cudaStream_t stream);

}  // namespace indexcache
