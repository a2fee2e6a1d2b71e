// The measured speeds the planner's time estimates are scaled from, each with the entry of
// docs/benchmarks.md it comes from. Nothing here is a guess except where a name says "assumed".
//
// Layer time: the V3.2-shaped 8-layer stack (`indexcache bench`, run 4, H100) gives per context
// the prefill time of all-F and of 1/8 (one Full layer, seven Shared). Per layer, t_full = all / 8
// and t_shared = (one_in_eight - t_full) / 7; the indexer costs t_full - t_shared. Dividing the
// stack layer's FLOPs (parallel/layer_flops.h) by those times gives effective FLOP/s for the
// non-indexer part (GEMMs + sparse MLA) and for the indexer, interpolated in log2(context) between
// the measured 8K, 32K and 128K and held constant outside. Another model's layer (GLM-5) is timed
// as its FLOPs at those rates: same kernels, other widths.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "core/status.h"

namespace indexcache {

struct DeviceProfile {
  std::string name;            // "H200"
  double memory_gb = 0;        // default memory per GPU (GB = 1e9 bytes)
  double copy_bytes_per_s = 0; // device-to-device copy, read + write, measured
  double gemm_bf16_flops = 0;  // cuBLAS bf16 8192^3, measured
  double gemm_fp8_flops = 0;   // fp8 GEMM ceiling, measured on the H200 (the H100's assumed equal)
  std::string source;
};

// "h200" or "h100" (case-insensitive).
StatusOr<DeviceProfile> DeviceProfileByName(const std::string& name);

// Effective FLOP/s on `device` of the non-indexer part of a layer (GEMMs + sparse MLA) and of
// the indexer (projections + scores + top-k), at a prefill context of `tokens`.
double NonIndexerFlopsPerSecond(const DeviceProfile& device, int64_t tokens);
double IndexerFlopsPerSecond(const DeviceProfile& device, int64_t tokens);
// The fused distillation loss kernel, forward + backward (H100 measurement, scaled like the rest).
double DistillLossFlopsPerSecond(const DeviceProfile& device, bool dense, int served);
// A MoE layer's routed experts (routing, dispatch, FP8-resident expert GEMMs, combine) over `rows`
// tokens at once (one forward chunk): the measured V3.2 MoE block, interpolated in log2(rows).
double MoeFlopsPerSecond(const DeviceProfile& device, int64_t rows);
// NCCL all-reduce bus bandwidth between two H200s of one host (measured).
double AllReduceBusBytesPerSecond();
// Point-to-point bandwidth for the hidden state and indices between stages: within a node the
// measured NCCL algbw; across nodes an assumed 400 Gb/s NIC per GPU.
double StageLinkBytesPerSecond(bool crosses_nodes);

// One line per measurement used, for the plan's output.
std::vector<std::string> MeasurementSources(const DeviceProfile& device);

}  // namespace indexcache
