// Sparse MLA for any head sizes (the fast kernel in sparse_mla_cuda.h covers d_qk 576 / d_v 512
// only). Same semantics and parameters; simple and slow: for small test models and odd shapes.
#pragma once

#include "core/status.h"
#include "kernels/sparse_mla_cuda.h"

namespace indexcache {

// Requires topk <= 8192 (the selected logits of a query live in shared memory).
void SparseMlaGenericCuda(const SparseMlaCudaParams& p, cudaStream_t stream);

// Whether sparse MLA on CUDA (the wgmma kernel for d_qk 576 / d_v 512, else this one) supports a
// model: checked when the model loads. `topk_name` names the top-k in the error.
indexcache::Status SparseMlaCudaSupports(int64_t d_qk, int64_t d_v, int64_t topk, const char* topk_name = "index_topk");

}  // namespace indexcache
