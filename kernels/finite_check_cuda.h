// Non-finite detection on the device, for the forward's per-layer check (model/backend.h
// NoteNonFinite): a grid-stride scan that records the smallest tag of any array holding a NaN or
// an Inf in one device int with atomicMin. Many checks are queued without a host round trip; the
// caller reads the flag once per forward.
#pragma once

#include <cstdint>

#include <cuda_runtime_api.h>

namespace indexcache {

// `x` holds n elements, bf16 (`is_bf16`) or fp32. If any is NaN or +-Inf: *flag = min(*flag, tag).
// Asynchronous on `stream`. n == 0 does nothing.
void NoteNonFiniteCuda(const void* x, bool is_bf16, int64_t n, int32_t tag, int32_t* flag, cudaStream_t stream);

}  // namespace indexcache
