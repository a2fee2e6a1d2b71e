// MoE routing on the GPU (mirrors kernels/moe_routing.h; MoeRoutingCpu is the reference and the
// result is the same: the same experts in the same order, and weights equal up to the rounding of
// the normalising division, which both sides do in the same fp32 order, so in practice bitwise).
// One warp routes one token: the scores live in shared memory, each lane rates one group, and the
// group and expert top-k are repeated warp arg-max reductions whose ties go to the lower index,
// the CPU's stable-sort rule. The NaN rule of moe_routing.h (NaN ranks as -inf) is the same here.
#pragma once

#include <cstdint>

#include <cuda_runtime_api.h>

#include "core/status.h"
#include "kernels/moe_routing.h"

namespace indexcache {

// What the kernel supports: E <= 1024 experts (32 per lane), E divisible by n_group, n_group <= 32
// (one lane per group), 1 <= topk_group <= n_group, 1 <= topk <= 32 and topk <= the experts of
// topk_group groups. An error names the config.json field.
Status MoeRoutingCudaSupports(int64_t E, int64_t n_group, int64_t topk_group, int64_t topk);

// MoeRoutingCpu on device pointers: p.logits [T, E] f32, p.bias [E] f32 or nullptr,
// p.out_experts [T, topk] int32, p.out_weights [T, topk] f32. Asynchronous on `stream`; sizes must
// pass MoeRoutingCudaSupports (checked: abort otherwise, a caller bug).
void MoeRoutingCuda(const MoeRoutingParams& p, cudaStream_t stream);

}  // namespace indexcache
