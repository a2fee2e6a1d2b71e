// Fused AdamW step on the GPU (mirrors AdamWUpdateCpu in optim/adamw_update.h, the reference):
// one pass over p, m, v and g in device memory, reading 16 and writing 12 bytes per parameter.
#pragma once

#include <cstdint>

#include <cuda_runtime_api.h>

#include "optim/adamw_update.h"

namespace indexcache {

// param, exp_avg, exp_avg_sq (updated in place) and grad: n fp32 values each in device memory,
// not overlapping. `s` from MakeAdamWScalars for this step and parameter group. 16-byte vector
// accesses when all four pointers are 16-byte aligned. Asynchronous on `stream`; launch errors
// abort through CUDA_CHECK.
void AdamWUpdateCuda(float* param, float* exp_avg, float* exp_avg_sq, const float* grad, int64_t n,
                     const AdamWScalars& s, cudaStream_t stream);

}  // namespace indexcache
