// The two small operations a batched decode step needs on top of the forward's kernels, CPU
// references. Their CUDA versions are in kernels/batched_decode_cuda.h (same names, Cuda suffix).
//
// A batched decode step (model/batched_decode.cc) keeps many requests' latents and indexer keys in
// one pooled buffer per layer, request r owning rows [base_r, base_r + capacity_r):
//  - ScatterRows writes the step's new row of every request to its own row of the pool;
//  - OffsetIndices turns each request's top-k (indices into its own keys, -1 padding) into indices
//    into the pool, so ONE sparse MLA call serves every request of the batch.
#pragma once

#include <cstdint>

namespace indexcache {

// dst[rows[i], :] = src[i, :] for i in [0, n); rows of `row_bytes` bytes. rows are distinct and in
// range (the caller's invariant).
void ScatterRowsCpu(const void* src, const int32_t* rows, int64_t n, int64_t row_bytes, void* dst);

// indices[t, j] += offsets[t] for every entry >= 0 of indices [T, k]; negative entries (the -1
// padding) are left as they are. The sums fit int32 (the caller's invariant).
void OffsetIndicesCpu(const int32_t* offsets, int64_t T, int64_t k, int32_t* indices);

}  // namespace indexcache
