#include "parallel/measured_throughput.h"

#include <algorithm>
#include <cctype>
#include <cmath>
#include <cstdio>

#include "model/config.h"
#include "model/pattern.h"
#include "parallel/layer_flops.h"

namespace indexcache {

namespace {

// docs/benchmarks.md, "Layer stack: prefill and decode under IndexCache patterns", run 4
// (NVIDIA H100 80GB HBM3, 2026-11-23, `indexcache bench --decode-steps 32`): whole-context
// prefill seconds of 8 layers, all-F and 1/8.
struct StackPoint {
  int64_t tokens;
  double all_full_s;
  double one_in_eight_s;
};
constexpr StackPoint kStack[] = {{8192, 0.243, 0.219}, {32768, 1.137, 0.911}, {131072, 6.547, 3.985}};
constexpr int kStackLayers = 8;
// The bf16 GEMM ceiling measured in that session (the layer-stack device).
constexpr double kStackDeviceGemmFlops = 797e12;

// docs/benchmarks.md, "Distillation loss, fused forward + backward" (H100): TFLOP/s by mode and
// served layers, the mean of the 8K and 32K rows.
constexpr double kLossDense1 = 99.75e12, kLossDense4 = 125.95e12;
constexpr double kLossSparse1 = 87.85e12, kLossSparse4 = 112.0e12;

// docs/benchmarks.md, "Full-size DeepSeek-V3.2 layers ... 2 x H200" (nvidia-h200-x2, 2026-12-01,
// `moe_cuda_bench`): the routed MoE block of V3.2 (256 experts x 2048, k 8, FP8-resident experts,
// one cuBLAS GEMM per expert) end to end, 6 T k 7168 2048 FLOPs over its total time, by tokens T;
// and that run's bf16 GEMM ceiling.
struct MoePoint {
  int64_t rows;
  double flops_per_s;
};
constexpr MoePoint kMoe[] = {{4096, 119.0e12}, {16384, 322.7e12}, {32768, 440.4e12}};
constexpr double kMoeDeviceGemmFlops = 774e12;

// docs/benchmarks.md, "NCCL all-reduce" (2 x H200): 256 MiB fp32, busbw = algbw.
constexpr double kAllReduceBusBytes = 229.7e9;
constexpr double kInterNodeAssumedBytes = 50e9;  // assumed: 400 Gb/s per GPU

// The stack's layer: V3.2 attention and indexer widths, dense MLP of 18432 (bench defaults).
ModelConfig StackLayerConfig() {
  ModelConfig c;
  c.hidden_size = 7168;
  c.num_layers = 1;
  c.num_heads = 128;
  c.q_lora_rank = 1536;
  c.kv_lora_rank = 512;
  c.qk_nope_head_dim = 128;
  c.qk_rope_head_dim = 64;
  c.v_head_dim = 128;
  c.index_topk = 2048;
  c.index_n_heads = 64;
  c.index_head_dim = 128;
  c.intermediate_size = 18432;
  c.vocab_size = 32000;
  c.layer_is_moe = {false};
  c.pattern = IndexPattern::AllFull(1);
  return c;
}

struct StackRates {
  double non_indexer;  // FLOP/s on the stack's device
  double indexer;
};

StackRates RatesAt(const StackPoint& p) {
  static const ModelConfig layer = StackLayerConfig();
  const double t_full = p.all_full_s / kStackLayers;
  const double t_shared = (p.one_in_eight_s - t_full) / (kStackLayers - 1);
  const LayerFlops f = ForwardFlops(layer, 0, true, p.tokens);
  return {(f.gemm + f.sparse_attention) / t_shared, f.indexer / (t_full - t_shared)};
}

// Linear interpolation in log2(tokens) between the measured contexts, constant outside.
double Interpolate(int64_t tokens, double StackRates::*rate) {
  const int n = sizeof(kStack) / sizeof(kStack[0]);
  if (tokens <= kStack[0].tokens) return RatesAt(kStack[0]).*rate;
  if (tokens >= kStack[n - 1].tokens) return RatesAt(kStack[n - 1]).*rate;
  for (int i = 0; i + 1 < n; ++i) {
    if (tokens <= kStack[i + 1].tokens) {
      const double x = std::log2(static_cast<double>(tokens)), x0 = std::log2(static_cast<double>(kStack[i].tokens)),
                   x1 = std::log2(static_cast<double>(kStack[i + 1].tokens));
      const double w = (x - x0) / (x1 - x0);
      return (1 - w) * (RatesAt(kStack[i]).*rate) + w * (RatesAt(kStack[i + 1]).*rate);
    }
  }
  return RatesAt(kStack[n - 1]).*rate;
}

double ComputeScale(const DeviceProfile& d) { return d.gemm_bf16_flops / kStackDeviceGemmFlops; }

}  // namespace

StatusOr<DeviceProfile> DeviceProfileByName(const std::string& name) {
  std::string lower = name;
  std::transform(lower.begin(), lower.end(), lower.begin(), [](unsigned char ch) { return std::tolower(ch); });
  if (lower == "h200") {
    return DeviceProfile{"H200", 141, 4241e9, 791e12, 1447e12,
                         "H200 (nvidia-h200, 2026-11-30): bf16 GEMM 791 TFLOP/s, fp8 GEMM 1447 TFLOP/s, copy 4241 GB/s"};
  }
  if (lower == "h100") {
    return DeviceProfile{"H100", 80, 2969e9, 793e12, 1447e12,
                         "H100 80GB HBM3 (nvidia-h100-x1, 2026-11-23): bf16 GEMM 793 TFLOP/s, copy 2969 GB/s; "
                         "fp8 GEMM assumed as measured on the H200"};
  }
  return InvalidArgument("--gpu: '" + name + "' is not a measured device (h200, h100)");
}

double NonIndexerFlopsPerSecond(const DeviceProfile& device, int64_t tokens) {
  return Interpolate(tokens, &StackRates::non_indexer) * ComputeScale(device);
}

double IndexerFlopsPerSecond(const DeviceProfile& device, int64_t tokens) {
  return Interpolate(tokens, &StackRates::indexer) * ComputeScale(device);
}

double DistillLossFlopsPerSecond(const DeviceProfile& device, bool dense, int served) {
  const double one = dense ? kLossDense1 : kLossSparse1, four = dense ? kLossDense4 : kLossSparse4;
  const double w = std::clamp((served - 1) / 3.0, 0.0, 1.0);
  return ((1 - w) * one + w * four) * ComputeScale(device);
}

double MoeFlopsPerSecond(const DeviceProfile& device, int64_t rows) {
  const int n = sizeof(kMoe) / sizeof(kMoe[0]);
  double rate = kMoe[n - 1].flops_per_s;
  if (rows <= kMoe[0].rows) {
    rate = kMoe[0].flops_per_s * static_cast<double>(rows) / kMoe[0].rows;  // launch-bound below: linear
  } else {
    for (int i = 0; i + 1 < n; ++i) {
      if (rows <= kMoe[i + 1].rows) {
        const double w = (std::log2(double(rows)) - std::log2(double(kMoe[i].rows))) /
                         (std::log2(double(kMoe[i + 1].rows)) - std::log2(double(kMoe[i].rows)));
        rate = (1 - w) * kMoe[i].flops_per_s + w * kMoe[i + 1].flops_per_s;
        break;
      }
    }
  }
  return rate * device.gemm_bf16_flops / kMoeDeviceGemmFlops;
}

double AllReduceBusBytesPerSecond() { return kAllReduceBusBytes; }

double StageLinkBytesPerSecond(bool crosses_nodes) {
  return crosses_nodes ? kInterNodeAssumedBytes : kAllReduceBusBytes;
}

std::vector<std::string> MeasurementSources(const DeviceProfile& device) {
  char line[320];
  std::vector<std::string> out;
  out.push_back("device: " + device.source + " (docs/benchmarks.md)");
  for (const StackPoint& p : kStack) {
    const StackRates r = RatesAt(p);
    std::snprintf(line, sizeof(line),
                  "layer time at %lldK: V3.2-shaped stack prefill, all-F %.3f s / 1/8 %.3f s per 8 layers (H100, "
                  "bench run 4) -> non-indexer %.0f TFLOP/s, indexer %.0f TFLOP/s",
                  static_cast<long long>(p.tokens / 1024), p.all_full_s, p.one_in_eight_s, r.non_indexer / 1e12,
                  r.indexer / 1e12);
    out.push_back(line);
  }
  std::snprintf(line, sizeof(line), "compute scaled by the GEMM ceilings: %s %.0f / H100 stack session %.0f TFLOP/s",
                device.name.c_str(), device.gemm_bf16_flops / 1e12, kStackDeviceGemmFlops / 1e12);
  out.push_back(line);
  out.push_back("distillation loss: fused kernel bench (H100): dense 100-126 TFLOP/s, sparse 88-112 TFLOP/s (1-4 served layers)");
  out.push_back("routed MoE: V3.2 MoE block, FP8-resident experts (H200, moe_cuda_bench): 119 / 323 / 440 TFLOP/s at "
                "4K / 16K / 32K tokens per forward chunk");
  out.push_back("gradient all-reduce: NCCL 2 x H200 busbw 229.7 GB/s; stage links: the same within a node, 50 GB/s across "
                "nodes (assumed, 400 Gb/s per GPU)");
  out.push_back("weight reads: a layer takes at least its resident bytes / the device copy bandwidth");
  return out;
}

}  // namespace indexcache
