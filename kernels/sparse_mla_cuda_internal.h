// Internal to the CUDA sparse MLA (the interface is kernels/sparse_mla_cuda.h): the entry points of
// the two kernels behind SparseMlaCuda, which validates the parameters and picks one by
// SparseMlaCudaParams::variant.
//   - sparse_mla_cuda.cu:    kTwoWarpgroups, the first wgmma kernel (2 warpgroups, phases in series);
//   - sparse_mla_ws_cuda.cu: kWarpSpecialized (a loader warpgroup, two consumer warpgroups that
//     alternate 64-key blocks and split d_v, mbarrier hand-offs).
#pragma once

#include "kernels/sparse_mla_cuda.h"

namespace indexcache {
namespace sparse_mla {

// Both assume validated parameters (d_qk 576, d_v 512, sizes within int32, aligned pointers, T and
// H > 0) and abort on launch errors.
void LaunchTwoWarpgroups(const SparseMlaCudaParams& p, cudaStream_t stream);
void LaunchWarpSpecialized(const SparseMlaCudaParams& p, cudaStream_t stream);

// Experiments only (sparse_mla_cuda_bench --sweep); process-wide, not thread-safe. The defaults are
// what SparseMlaCuda runs.
struct WsExperiment {
  int prefetch_pairs = 0;     // L2 prefetch distance of the loader, in pairs of 64-key blocks (0: none)
  bool skip_gathers = false;  // the loader copies nothing (wrong results): the consumers' own ceiling
  bool kv_evict_last = true;  // gathers with an L2 evict-last policy (false: default policy)
  bool fp8_polling = false;   // FP8 loader: poll free / landed barriers instead of converting in order
};
void SetWsExperiment(const WsExperiment& e);

}  // namespace sparse_mla
}  // namespace indexcache
