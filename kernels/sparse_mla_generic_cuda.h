// Sparse MLA for any head sizes (the fast kernel in sparse_mla_cuda.h covers d_qk 576 / d_v 512
// only). Same semantics and parameters; simple and slow: for small test models and odd shapes.
#pragma once

#include "kernels/sparse_mla_cuda.h"

namespace indexcache {

// Requires topk <= 8192 (the selected logits of a query live in shared memory).
void SparseMlaGenericCuda(const SparseMlaCudaParams& p, cudaStream_t stream);

}  // namespace indexcache
