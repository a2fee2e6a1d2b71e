// Rotary position embedding tables and the two layouts DSA uses, CPU reference.
//
// MLA's rope part is INTERLEAVED: pairs (x0, x1), (x2, x3), ... rotate by frequency i = pair index.
// The deepseek_v32 indexer uses HALF-SPLIT rope: pairs (x_i, x_{i + d/2}). glm_moe_dsa's indexer
// uses the interleaved layout. Tables follow transformers (fp32 inverse frequencies and angles);
// yarn's attention factor multiplies cos and sin, so it scales q.k by its square.
// The CUDA rope is beside this reference: kernels/rope_cuda.h (rope_cuda.cu, rope_cuda_test.cc,
// rope_cuda_bench.cc).
#pragma once

#include <cstdint>
#include <memory>
#include <vector>

#include "kernels/rope_config.h"

namespace indexcache {

// A backend's copy of a table (e.g. on the GPU; model/cuda_backend.cc's UploadTable), made on first
// use so that every layer of a forward shares one upload. Type-erased, so that this CPU header
// needs nothing of CUDA. Copying a table drops it: the copy may be modified.
struct RopeDeviceCache {
  std::shared_ptr<const void> data;
  RopeDeviceCache() = default;
  RopeDeviceCache(const RopeDeviceCache&) {}
  RopeDeviceCache& operator=(const RopeDeviceCache&) {
    data.reset();
    return *this;
  }
};

struct RopeTable {
  int64_t rope_dim = 0;     // rotated dims (even); half = rope_dim / 2 frequencies
  int64_t num_positions = 0;
  int64_t first_position = 0;
  std::vector<float> cos;   // [num_positions, rope_dim / 2]
  std::vector<float> sin;   // [num_positions, rope_dim / 2]
  mutable RopeDeviceCache device;
};

// The inverse frequencies [rope_dim / 2] for default or yarn rope.
std::vector<float> RopeInverseFrequencies(const RopeConfig& rope, int64_t rope_dim);
RopeTable BuildRopeTable(const RopeConfig& rope, int64_t rope_dim, int64_t first_position, int64_t num_positions);

// Rotates x[t, h, 0:rope_dim] in place for t in [0, rows), h in [0, heads); row t uses table
// position t. `row_stride` and `head_stride` are in floats.
void ApplyRopeInterleavedCpu(const RopeTable& table, float* x, int64_t rows, int64_t heads, int64_t row_stride,
                             int64_t head_stride);
void ApplyRopeHalfSplitCpu(const RopeTable& table, float* x, int64_t rows, int64_t heads, int64_t row_stride,
                           int64_t head_stride);

}  // namespace indexcache
