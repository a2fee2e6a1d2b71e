// The routed-MoE block of DeepSeek-V3.2 on one GPU, phase by phase, as CudaBackend runs it:
// routing (MoeRoutingCuda), dispatch (CUB grouping, the E + 1 offsets to the host, row gather),
// the expert MLPs (MoeExpertMlpsCuda: one cuBLAS GEMM per expert; the grouped call beside it) with FP8-resident experts
// (dequantised in 1 GiB batches) and with bf16 experts, and the combine. Sizes: hidden 7168, 256
// experts of intermediate 2048, 8 per token, 8 groups keeping 4, T = 4096 / 16384 / 32768 tokens.
// The router logits are random, so expert loads are near-uniform (T * 8 / 256 rows per expert).
// The expert weights are random e4m3 bytes with random fp32 128 x 128 block scales, generated
// directly on the device: one host block of one expert's bytes copied to all 256 experts, each
// with its own scales (values do not change GEMM speed); the bf16 experts are their dequantised
// copy. The GEMM bar is a cuBLAS bf16 8192^3 GEMM measured in the same run.
//
//   moe_cuda_bench [--json PATH] [--quick]      (--quick: T = 4096 only)
//
// Prints a markdown table; exits 0 with "no CUDA device" where there is none.
#include <cublas_v2.h>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <random>
#include <string>
#include <vector>

#include "core/cuda_check.h"
#include "kernels/bench_util.h"
#include "kernels/elementwise_cuda.h"
#include "kernels/fp8_dequant.h"
#include "kernels/fp8_dequant_cuda.h"
#include "kernels/moe_dispatch_cuda.h"
#include "kernels/moe_experts_cuda.h"
#include "kernels/moe_routing_cuda.h"

namespace indexcache {
namespace {

using bf16 = __nv_bfloat16;

constexpr int64_t kHidden = 7168, kInter = 2048, kExperts = 256, kTopk = 8, kGroups = 8, kTopkGroup = 4;
constexpr int64_t kBlock = 128;
constexpr int64_t kScratchBytes = int64_t{1} << 30;  // CudaBackend's default dequantisation budget
constexpr int kWarmup = 2, kIters = 5;

Fp8BlockLayout Layout(int64_t rows, int64_t cols) {
  Fp8BlockLayout l;
  l.rows = rows;
  l.cols = cols;
  l.block_rows = kBlock;
  l.block_cols = kBlock;
  return l;
}

// 256 experts' gate, up, down: FP8 bytes and scales in two big buffers, bf16 copies if they fit.
struct Experts {
  uint8_t* fp8 = nullptr;
  float* scales = nullptr;
  bf16* dense = nullptr;
  std::vector<ExpertCuda> as_fp8, as_bf16;
};

Experts MakeExperts(bool with_bf16) {
  const int64_t per = 3 * kInter * kHidden;  // elements of one expert
  const Fp8BlockLayout gate = Layout(kInter, kHidden), down = Layout(kHidden, kInter);
  const int64_t scales_per = 2 * gate.scale_rows() * gate.scale_cols() + down.scale_rows() * down.scale_cols();
  Experts x;
  x.fp8 = DeviceAlloc<uint8_t>(kExperts * per);
  x.scales = DeviceAlloc<float>(kExperts * scales_per);
  std::mt19937 rng(1);
  std::vector<uint8_t> bytes(per);
  // Exponent field 4..9: magnitudes 2^-3 .. 2^2, never NaN.
  for (uint8_t& b : bytes) b = static_cast<uint8_t>((rng() & 0x80) | ((4 + rng() % 6) << 3) | (rng() & 7));
  CUDA_CHECK(cudaMemcpy(x.fp8, bytes.data(), per, cudaMemcpyHostToDevice));
  for (int64_t e = 1; e < kExperts; ++e) {
    CUDA_CHECK(cudaMemcpy(x.fp8 + e * per, x.fp8, per, cudaMemcpyDeviceToDevice));
  }
  std::vector<float> scales(kExperts * scales_per);
  std::uniform_real_distribution<float> u(0.002f, 0.006f);
  for (float& s : scales) s = u(rng);
  CUDA_CHECK(cudaMemcpy(x.scales, scales.data(), scales.size() * sizeof(float), cudaMemcpyHostToDevice));
  if (with_bf16) x.dense = DeviceAlloc<bf16>(kExperts * per);
  for (int64_t e = 0; e < kExperts; ++e) {
    ExpertCuda f, b;
    const uint8_t* q = x.fp8 + e * per;
    const float* s = x.scales + e * scales_per;
    ExpertMatrixCuda* fm[3] = {&f.gate, &f.up, &f.down};
    ExpertMatrixCuda* bm[3] = {&b.gate, &b.up, &b.down};
    for (int m = 0; m < 3; ++m) {
      const Fp8BlockLayout l = m < 2 ? gate : down;
      *fm[m] = ExpertMatrixCuda{q + m * kInter * kHidden, s, l.rows, l.cols, kBlock, kBlock};
      if (x.dense) {
        bf16* d = x.dense + e * per + m * kInter * kHidden;
        Fp8DequantCuda(static_cast<const uint8_t*>(fm[m]->values), s, l, d, nullptr);
        *bm[m] = ExpertMatrixCuda{d, nullptr, l.rows, l.cols, 0, 0};
      }
      s += l.scale_rows() * l.scale_cols();
    }
    x.as_fp8.push_back(f);
    if (x.dense) x.as_bf16.push_back(b);
  }
  CUDA_CHECK(cudaDeviceSynchronize());
  return x;
}

struct Row {
  std::string experts;
  int64_t T;
  double route_ms, dispatch_ms, gemm_ms, combine_ms, total_ms, grouped_ms = 0;
  int batches;
  bool grouped;
  int32_t min_rows, max_rows;
};

Row Bench(cublasHandle_t handle, const Experts& ex, bool fp8, int64_t T, const float* logits, const float* bias,
          const bf16* x) {
  const int64_t n = T * kTopk;
  int32_t* experts = DeviceAlloc<int32_t>(n);
  float* weights = DeviceAlloc<float>(n);
  int32_t *order = DeviceAlloc<int32_t>(n), *inverse = DeviceAlloc<int32_t>(n);
  int32_t* offsets = DeviceAlloc<int32_t>(kExperts + 1);
  const size_t ws_bytes = MoeGroupByExpertCudaWorkspaceBytes(n, kExperts);
  void* ws = DeviceAlloc<char>(ws_bytes);
  bf16 *permuted = DeviceAlloc<bf16>(n * kHidden), *out = DeviceAlloc<bf16>(n * kHidden);
  bf16 *gate = DeviceAlloc<bf16>(n * kInter), *up = DeviceAlloc<bf16>(n * kInter);
  bf16* y = DeviceAlloc<bf16>(T * kHidden);
  CUDA_CHECK(cudaMemset(y, 0, T * kHidden * sizeof(bf16)));
  const int64_t scratch_elements = fp8 ? kScratchBytes / 2 : 0;
  bf16* scratch = fp8 ? DeviceAlloc<bf16>(scratch_elements) : nullptr;
  void* pointers = DeviceAlloc<char>(MoeExpertsCudaPointerBytes(kExperts));

  MoeRoutingParams p;
  p.logits = logits;
  p.bias = bias;
  p.T = T;
  p.E = kExperts;
  p.n_group = kGroups;
  p.topk_group = kTopkGroup;
  p.topk = kTopk;
  p.routed_scaling_factor = 2.5f;
  p.out_experts = experts;
  p.out_weights = weights;
  MoeExpertsCudaArgs args;
  args.experts = fp8 ? ex.as_fp8 : ex.as_bf16;
  args.offsets.resize(kExperts + 1);
  args.x = permuted;
  args.gate = gate;
  args.up = up;
  args.out = out;
  args.dequant = scratch;
  args.dequant_elements = scratch_elements;
  args.pointers = pointers;
  MoeExpertsCudaRun run;
  auto route = [&] { MoeRoutingCuda(p, nullptr); };
  auto dispatch = [&] {
    MoeGroupByExpertCuda(experts, n, kExperts, order, inverse, offsets, ws, ws_bytes, nullptr);
    CUDA_CHECK(cudaMemcpy(args.offsets.data(), offsets, (kExperts + 1) * sizeof(int32_t), cudaMemcpyDeviceToHost));
    MoeGatherCuda(x, order, n, kTopk, kHidden, permuted, nullptr);
  };
  auto gemms = [&] { run = MoeExpertMlpsCuda(handle, args, nullptr); };
  auto combine = [&] { MoeCombineCuda(out, inverse, weights, T, kTopk, kHidden, y, nullptr); };
  Row r;
  r.experts = fp8 ? "FP8-resident" : "bf16";
  r.T = T;
  r.route_ms = MedianMs(route, kWarmup, kIters);
  r.dispatch_ms = MedianMs(dispatch, kWarmup, kIters);
  r.gemm_ms = MedianMs(gemms, kWarmup, kIters);
  r.combine_ms = MedianMs(combine, kWarmup, kIters);
  // The same expert MLPs through cublasGemmGroupedBatchedEx, for comparison (the default is the
  // per-expert loop, MoeExpertsCudaArgs::grouped_gemm).
  MoeExpertsCudaArgs grouped_args = args;
  grouped_args.grouped_gemm = true;
  r.grouped_ms = MedianMs([&] { MoeExpertMlpsCuda(handle, grouped_args, nullptr); }, kWarmup, kIters);
  r.total_ms = MedianMs([&] { route(); dispatch(); gemms(); combine(); }, kWarmup, kIters);
  r.batches = run.batches;
  r.grouped = run.grouped;
  r.min_rows = n;
  r.max_rows = 0;
  for (int64_t e = 0; e < kExperts; ++e) {
    r.min_rows = std::min(r.min_rows, args.offsets[e + 1] - args.offsets[e]);
    r.max_rows = std::max(r.max_rows, args.offsets[e + 1] - args.offsets[e]);
  }
  for (void* q : {static_cast<void*>(experts), static_cast<void*>(weights), static_cast<void*>(order),
                  static_cast<void*>(inverse), static_cast<void*>(offsets), ws, static_cast<void*>(permuted),
                  static_cast<void*>(out), static_cast<void*>(gate), static_cast<void*>(up), static_cast<void*>(y),
                  static_cast<void*>(scratch), pointers}) {
    if (q) CUDA_CHECK(cudaFree(q));
  }
  return r;
}

int Main(int argc, char** argv) {
  const char* json_path = nullptr;
  bool quick = false;
  if (!ParseJsonFlag(argc, argv, &json_path, "--quick", &quick)) return 1;
  cudaDeviceProp prop;
  if (!BenchDeviceProps(&prop)) return 0;
  const double ceiling = MeasureBf16GemmTflops(8192);
  const std::vector<int64_t> sizes = quick ? std::vector<int64_t>{4096} : std::vector<int64_t>{4096, 16384, 32768};
  const int64_t max_T = sizes.back();
  // bf16 experts (22.5 GB) where they fit beside the FP8 ones and the largest run's activations.
  size_t free = 0, total = 0;
  CUDA_CHECK(cudaMemGetInfo(&free, &total));
  const double fp8_bytes = 3.0 * kInter * kHidden * kExperts, bf16_bytes = 2 * fp8_bytes;
  const double act_bytes = 2.0 * max_T * kTopk * (2 * kHidden + 2 * kInter) + 2.0 * max_T * kHidden + 2e9;
  const bool with_bf16 = fp8_bytes + bf16_bytes + act_bytes < 0.95 * free;
  const Experts ex = MakeExperts(with_bf16);

  std::vector<float> host_logits(max_T * kExperts), host_bias(kExperts);
  std::mt19937 rng(2);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  for (float& v : host_logits) v = normal(rng);
  for (float& v : host_bias) v = 0.01f * normal(rng);
  float* logits = DeviceAlloc<float>(host_logits.size());
  float* bias = DeviceAlloc<float>(kExperts);
  CUDA_CHECK(cudaMemcpy(logits, host_logits.data(), host_logits.size() * sizeof(float), cudaMemcpyHostToDevice));
  CUDA_CHECK(cudaMemcpy(bias, host_bias.data(), kExperts * sizeof(float), cudaMemcpyHostToDevice));
  bf16* x = NewRandomBf16(static_cast<size_t>(max_T) * kHidden, 3);
  cublasHandle_t handle;
  CUBLAS_CHECK(cublasCreate(&handle));
  std::vector<Row> rows;
  for (int64_t T : sizes) {
    rows.push_back(Bench(handle, ex, /*fp8=*/true, T, logits, bias, x));
    if (with_bf16) rows.push_back(Bench(handle, ex, /*fp8=*/false, T, logits, bias, x));
  }
  CUBLAS_CHECK(cublasDestroy(handle));

  std::printf("Routed MoE of DeepSeek-V3.2 (hidden %lld, %lld experts x %lld, k %lld, groups %lld/%lld) on %s; "
              "cuBLAS bf16 8192^3 GEMM ceiling %.0f TFLOP/s%s\n\n",
              static_cast<long long>(kHidden), static_cast<long long>(kExperts), static_cast<long long>(kInter),
              static_cast<long long>(kTopk), static_cast<long long>(kTopkGroup), static_cast<long long>(kGroups),
              prop.name, ceiling, with_bf16 ? "" : " (bf16 experts skipped: not enough memory)");
  std::printf("| experts | T | rows/expert min-max | route ms | dispatch ms | expert MLPs ms (batches), FP8 dequant incl. | combine ms | "
              "total ms | tokens/s | GEMM TFLOP/s | of ceiling | grouped-GEMM MLPs ms |\n");
  std::printf("|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n");
  for (const Row& r : rows) {
    const double flops = 6.0 * r.T * kTopk * kHidden * kInter;
    const double tflops = flops / (r.gemm_ms * 1e9);
    std::printf("| %s | %lld | %d-%d | %.3f | %.3f | %.2f (%d%s) | %.3f | %.2f | %.0f | %.0f | %.0f%% | %s |\n",
                r.experts.c_str(), static_cast<long long>(r.T), r.min_rows, r.max_rows, r.route_ms, r.dispatch_ms,
                r.gemm_ms, r.batches, r.grouped ? ", grouped" : ", per-expert GEMMs", r.combine_ms, r.total_ms, r.T / (r.total_ms * 1e-3), tflops,
                100 * tflops / ceiling, std::to_string(r.grouped_ms).substr(0, 6).c_str());
  }
  if (json_path) {
    FILE* f = OpenJsonFile(json_path);
    if (!f) return 1;
    std::fprintf(f, "{\"device\": \"%s\", \"gemm_ceiling_tflops\": %.1f, \"results\": [", prop.name, ceiling);
    for (size_t i = 0; i < rows.size(); ++i) {
      const Row& r = rows[i];
      std::fprintf(f,
                   "%s\n  {\"experts\": \"%s\", \"tokens\": %lld, \"route_ms\": %.4f, \"dispatch_ms\": %.4f, "
                   "\"gemm_ms\": %.4f, \"batches\": %d, \"grouped\": %s, \"combine_ms\": %.4f, \"total_ms\": %.4f, \"grouped_ms\": %.4f}",
                   i ? "," : "", r.experts.c_str(), static_cast<long long>(r.T), r.route_ms, r.dispatch_ms,
                   r.gemm_ms, r.batches, r.grouped ? "true" : "false", r.combine_ms, r.total_ms, r.grouped_ms);
    }
    std::fprintf(f, "\n]}\n");
    std::fclose(f);
  }
  return 0;
}

}  // namespace
}  // namespace indexcache

int main(int argc, char** argv) { return indexcache::Main(argc, argv); }
