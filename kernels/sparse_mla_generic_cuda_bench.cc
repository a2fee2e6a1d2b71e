// SparseMlaGenericCuda (sparse MLA for any head sizes: the path of models whose d_qk / d_v are not
// 576 / 512, such as the reference model) throughput, against ceilings measured in the same run:
// a cuBLAS bf16 GEMM (compute), a device-to-device copy (bandwidth), and, at the one shape both
// kernels support, the wgmma SparseMlaCuda on the same inputs.
//
//   sparse_mla_generic_cuda_bench [--json PATH]
//
// Rows: the reference model's attention (H = 8, d_qk = 160, d_v = 128, topk = 256) at 4K and 16K
// tokens (T = L, prefill); a mid-sized one (H = 16, d_qk = 288, d_v = 256, topk = 1024, T = 4096,
// L = 32K); and DeepSeek-V3.2's (H = 128, 576 / 512, topk = 2048, T = 1024, L = 32K) with the wgmma
// kernel beside it. FLOPs are counted as FlashMLA counts them, 2 * H * (d_qk + d_v) * topk per
// query. "KV GB/s" is the traffic this kernel asks of the memory system: one block per (query,
// head) reads each selected latent once per head, T * H * topk * d_qk * 2 bytes (mostly L2 hits),
// compared with the copy bandwidth. Random valid indices, warm-up runs, CUDA events, medians.
// Prints a markdown table; with --json also writes the numbers to PATH. Exits 0 with
// "no CUDA device" where there is none, so CI can run it.
#include <cstdint>
#include <cstdio>
#include <vector>

#include "core/cuda_check.h"
#include "core/device_buffer.h"
#include "kernels/bench_util.h"
#include "kernels/sparse_mla_cuda.h"
#include "kernels/sparse_mla_generic_cuda.h"

namespace indexcache {
namespace {

constexpr int kWarmup = 3;
constexpr int kIters = 15;

struct Shape {
  const char* name;
  int64_t H, d_qk, d_v, topk, T, L;
};

struct Result {
  Shape s;
  double ms, tflops, kv_gbps;
  double wgmma_ms = 0;  // the wgmma kernel on the same inputs; 0 where it does not apply
};

Result Bench(const Shape& s) {
  DeviceBuffer<__nv_bfloat16> q(s.T * s.H * s.d_qk), kv(s.L * s.d_qk), out(s.T * s.H * s.d_v);
  DeviceBuffer<float> lse(s.T * s.H);
  DeviceBuffer<int32_t> idx(s.T * s.topk);
  FillRandomBf16(q.ptr, q.size(), 1);
  FillRandomBf16(kv.ptr, kv.size(), 2);
  std::vector<int32_t> hidx(idx.size());
  uint64_t x = 12345 + static_cast<uint64_t>(s.L);
  for (int32_t& v : hidx) {
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    v = static_cast<int32_t>((x >> 20) % static_cast<uint64_t>(s.L));
  }
  idx.CopyFrom(hidx);

  SparseMlaCudaParams p;
  p.q = q.ptr;
  p.kv = kv.ptr;
  p.indices = idx.ptr;
  p.T = s.T;
  p.H = s.H;
  p.d_qk = s.d_qk;
  p.d_v = s.d_v;
  p.L = s.L;
  p.topk = s.topk;
  p.scale = 0.0625f;
  p.out = out.ptr;
  p.lse = lse.ptr;
  Result r{s, 0, 0, 0};
  r.ms = MedianMs([&] { SparseMlaGenericCuda(p, nullptr); }, kWarmup, kIters);
  const double flops = 2.0 * s.H * (s.d_qk + s.d_v) * s.topk * s.T;
  r.tflops = flops / (r.ms * 1e9);
  r.kv_gbps = double(s.T) * s.H * s.topk * s.d_qk * 2 / (r.ms * 1e6);
  if (s.d_qk == 576 && s.d_v == 512) r.wgmma_ms = MedianMs([&] { SparseMlaCuda(p, nullptr); }, kWarmup, kIters);
  return r;
}

int Main(int argc, char** argv) {
  const char* json_path = nullptr;
  if (!ParseJsonFlag(argc, argv, &json_path)) return 1;
  cudaDeviceProp prop;
  if (!BenchDeviceProps(&prop)) return 0;
  const double gemm_tflops = MeasureBf16GemmTflops(8192);
  const double copy_gbps = MeasureCopyGbps(size_t{1} << 30);  // 1 GiB

  std::vector<Result> results;
  for (const Shape& s : {Shape{"reference 4K", 8, 160, 128, 256, 4096, 4096},
                         Shape{"reference 16K", 8, 160, 128, 256, 16384, 16384},
                         Shape{"mid-sized", 16, 288, 256, 1024, 4096, 32 * 1024},
                         Shape{"deepseek_v32", 128, 576, 512, 2048, 1024, 32 * 1024}}) {
    results.push_back(Bench(s));
  }

  std::printf("SparseMlaGenericCuda bf16 on %s (%d SMs), median of %d; cuBLAS bf16 GEMM 8192^3 %.0f TFLOP/s, "
              "device copy %.0f GB/s (1 GiB D2D, read+write)\n\n",
              prop.name, prop.multiProcessorCount, kIters, gemm_tflops, copy_gbps);
  std::printf("| shape | H | d_qk | d_v | topk | T | L | median ms | TFLOP/s | of GEMM | KV GB/s (per head) | of copy "
              "| wgmma kernel ms |\n|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n");
  for (const Result& r : results) {
    char wgmma[32] = "-";
    if (r.wgmma_ms > 0) std::snprintf(wgmma, sizeof(wgmma), "%.3f (%.1fx)", r.wgmma_ms, r.ms / r.wgmma_ms);
    std::printf("| %s | %lld | %lld | %lld | %lld | %lld | %lld | %.3f | %.1f | %.1f%% | %.0f | %.0f%% | %s |\n",
                r.s.name, static_cast<long long>(r.s.H), static_cast<long long>(r.s.d_qk),
                static_cast<long long>(r.s.d_v), static_cast<long long>(r.s.topk), static_cast<long long>(r.s.T),
                static_cast<long long>(r.s.L), r.ms, r.tflops, 100.0 * r.tflops / gemm_tflops, r.kv_gbps,
                100.0 * r.kv_gbps / copy_gbps, wgmma);
  }

  if (json_path != nullptr) {
    FILE* f = OpenJsonFile(json_path);
    if (f == nullptr) return 1;
    std::fprintf(f, "{\"device\": \"%s\", \"gemm_bf16_tflops\": %.1f, \"copy_gbps\": %.1f, \"iters\": %d, "
                 "\"sparse_mla_generic_bf16\": [", prop.name, gemm_tflops, copy_gbps, kIters);
    for (size_t i = 0; i < results.size(); ++i) {
      const Result& r = results[i];
      std::fprintf(f, "%s\n  {\"shape\": \"%s\", \"H\": %lld, \"d_qk\": %lld, \"d_v\": %lld, \"topk\": %lld, "
                   "\"T\": %lld, \"L\": %lld, \"median_ms\": %.4f, \"tflops\": %.2f, \"fraction_of_gemm\": %.4f, "
                   "\"kv_gbps_per_head\": %.1f, \"fraction_of_copy\": %.3f, \"wgmma_median_ms\": %.4f}",
                   i ? "," : "", r.s.name, static_cast<long long>(r.s.H), static_cast<long long>(r.s.d_qk),
                   static_cast<long long>(r.s.d_v), static_cast<long long>(r.s.topk), static_cast<long long>(r.s.T),
                   static_cast<long long>(r.s.L), r.ms, r.tflops, r.tflops / gemm_tflops, r.kv_gbps,
                   r.kv_gbps / copy_gbps, r.wgmma_ms);
    }
    std::fprintf(f, "\n]}\n");
    std::fclose(f);
  }
  return 0;
}

}  // namespace
}  // namespace indexcache

int main(int argc, char** argv) { return indexcache::Main(argc, argv); }
