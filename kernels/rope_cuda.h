// Rotary position embedding on the GPU, beside its CPU reference (kernels/rope.h, rope_cpu.cc:
// the tables and ApplyRope{Interleaved,HalfSplit}Cpu). kernels/rope_cuda_test.cc compares the two on
// odd shapes; kernels/rope_cuda_bench.cc times the kernel.
//
// The tables are built on the host (BuildRopeTable) and uploaded by the backend once per table
// (model/cuda_backend.cc keeps the device copy in RopeTable::device). The MLA latent's interleaved
// rope is fused into MlaLatentCuda (kernels/elementwise_cuda.h).
// All launches are asynchronous on `stream`.
#pragma once

#include <cstdint>

#include <cuda_bf16.h>
#include <cuda_runtime_api.h>

namespace indexcache {

// Rotates the rope dims of x in place: for row t and head h the pairs start at
// x + t * row_stride + h * head_stride + offset; interleaved pairs (2i, 2i+1) or half-split
// (i, i + half). Row t uses cos/sin[t, :] ([T, half], fp32). bf16 rows are rotated in fp32 and
// rounded once.
void RopeCuda(const float* cos, const float* sin, int64_t T, int64_t half, bool interleaved, int64_t heads,
              int64_t row_stride, int64_t head_stride, int64_t offset, __nv_bfloat16* x, cudaStream_t stream);
void RopeCuda(const float* cos, const float* sin, int64_t T, int64_t half, bool interleaved, int64_t heads,
              int64_t row_stride, int64_t head_stride, int64_t offset, float* x, cudaStream_t stream);

}  // namespace indexcache
