// MoE dispatch and combine, CPU reference (the CUDA versions are kernels/moe_dispatch_cuda.h).
//
// After routing, token t's j-th choice is ASSIGNMENT a = t * k + j. The expert MLPs want the rows
// of one expert contiguous, so the assignments are grouped by expert, stably: position i of the
// permuted buffer holds assignment order[i]; expert e owns positions [offsets[e], offsets[e + 1]);
// within an expert, assignments (hence tokens) stay in increasing order. inverse[a] is the
// position of assignment a. The combine then reads each token's k expert outputs back in j order
// with no atomics, so the result is the same on every run and on every backend's schedule.
#pragma once

#include <cstdint>

namespace indexcache {

// experts [n] in [0, E) (n = T * k); order [n], inverse [n], offsets [E + 1].
void MoeGroupByExpertCpu(const int32_t* experts, int64_t n, int64_t E, int32_t* order, int32_t* inverse,
                         int32_t* offsets);

// y[i, :] = x[order[i] / k, :] for i < n: the token rows of the grouped assignments. x [T, cols].
void MoeGatherCpu(const float* x, const int32_t* order, int64_t n, int64_t k, int64_t cols, float* y);

// y[t, c] += sum_j weights[t * k + j] * rows[inverse[t * k + j], c]: the sum accumulated in fp32 in
// increasing j from 0 (each product rounded, then added: no fused multiply-add), then added to y
// once. The CUDA kernel does the same operations in the same order, so it is bitwise equal.
void MoeCombineCpu(const float* rows, const int32_t* inverse, const float* weights, int64_t T, int64_t k, int64_t cols,
                   float* y);

}  // namespace indexcache
