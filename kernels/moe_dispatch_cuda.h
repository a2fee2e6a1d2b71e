// MoE dispatch and combine on the GPU (mirrors kernels/moe_dispatch.h, whose *Cpu functions are the
// reference): the stable grouping of the T * k assignments by expert through CUB's radix sort
// (keys = expert id, values = assignment index; LSD radix sort is stable, so within an expert the
// assignments keep token order), the expert offsets by binary search in the sorted keys, the row
// gather into the permuted buffer and the deterministic gather-combine (no float atomics).
#pragma once

#include <cstddef>
#include <cstdint>

#include <cuda_bf16.h>
#include <cuda_runtime_api.h>

namespace indexcache {

// Device scratch MoeGroupByExpertCuda needs for n assignments over E experts.
size_t MoeGroupByExpertCudaWorkspaceBytes(int64_t n, int64_t E);

// MoeGroupByExpertCpu on device pointers (order, inverse [n], offsets [E + 1], all int32); equal to
// it element for element. `workspace` holds MoeGroupByExpertCudaWorkspaceBytes(n, E) bytes.
// Asynchronous on `stream`.
void MoeGroupByExpertCuda(const int32_t* experts, int64_t n, int64_t E, int32_t* order, int32_t* inverse,
                          int32_t* offsets, void* workspace, size_t workspace_bytes, cudaStream_t stream);

// MoeGatherCpu in bf16 (a copy: bitwise equal). 16-byte vectors when cols % 8 == 0 and the
// pointers are 16-byte aligned, scalars otherwise.
void MoeGatherCuda(const __nv_bfloat16* x, const int32_t* order, int64_t n, int64_t k, int64_t cols,
                   __nv_bfloat16* y, cudaStream_t stream);

// MoeCombineCpu with bf16 rows and y (fp32 weights, fp32 accumulation, y rounded once): bitwise
// equal to the CPU on the same bf16 values, and run to run. k <= 64.
void MoeCombineCuda(const __nv_bfloat16* rows, const int32_t* inverse, const float* weights, int64_t T, int64_t k,
                    int64_t cols, __nv_bfloat16* y, cudaStream_t stream);

}  // namespace indexcache
