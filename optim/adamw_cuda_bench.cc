// Fused AdamW step (and the clipping kernels) on indexer-sized fp32 buffers, as a fraction of the
// device's copy bandwidth measured in the same run (all three are memory-bound: their bar is a
// device-to-device copy).
//
//   adamw_cuda_bench [--json PATH]
//
// Prints a markdown table; with --json also writes the numbers to PATH. Exits 0 with
// "no CUDA device" where there is none, so CI can run it.
#include <cstdint>
#include <cstdio>
#include <functional>
#include <string>
#include <vector>

#include "core/cuda_check.h"
#include "kernels/bench_util.h"
#include "optim/adamw_cuda.h"
#include "optim/adamw_update.h"
#include "optim/clip_cuda.h"

namespace indexcache {
namespace {

constexpr int kWarmup = 5;
constexpr int kIters = 50;
// The largest indexer tensor of the models we train (~13M parameters), and an odd size.
constexpr int64_t kParams = 13'000'000;
constexpr int64_t kOddParams = 13'000'001;

// Median of kIters timings (us) of fn() after kWarmup untimed runs.
double MedianUs(const std::function<void()>& fn) { return MedianMs(fn, kWarmup, kIters) * 1e3; }

struct Result {
  std::string op;
  int64_t n;
  double us, bytes, gbps;
};

Result Make(const std::string& op, int64_t n, double us, double bytes) { return {op, n, us, bytes, bytes / (us * 1e3)}; }

std::vector<Result> BenchAll(int64_t n) {
  float *p, *m, *v, *g;
  CUDA_CHECK(cudaMalloc(&p, n * sizeof(float)));
  CUDA_CHECK(cudaMalloc(&m, n * sizeof(float)));
  CUDA_CHECK(cudaMalloc(&v, n * sizeof(float)));
  CUDA_CHECK(cudaMalloc(&g, n * sizeof(float)));
  // Bytes 0x3c make every float 0x3c3c3c3c (~0.0115): finite, and m, v, p stay finite over the
  // iterations (a tiny lr, the gradient constant).
  for (float* b : {p, m, v, g}) CUDA_CHECK(cudaMemset(b, 0x3c, n * sizeof(float)));
  const AdamWScalars s = MakeAdamWScalars(1e-6, 0.9, 0.999, 1e-8, 0.01, 10);
  std::vector<Result> out;
  const double adamw_us = MedianUs([&] { AdamWUpdateCuda(p, m, v, g, n, s, nullptr); });
  out.push_back(Make("adamw step (fused)", n, adamw_us, 28.0 * n));  // read p, m, v, g; write p, m, v

  double *sum64, *work64;
  float *sum32, *work32;
  CUDA_CHECK(cudaMalloc(&sum64, sizeof(double)));
  CUDA_CHECK(cudaMalloc(&work64, kSumOfSquaresWorkspace * sizeof(double)));
  CUDA_CHECK(cudaMalloc(&sum32, sizeof(float)));
  CUDA_CHECK(cudaMalloc(&work32, kSumOfSquaresWorkspace * sizeof(float)));
  out.push_back(Make("sum of squares fp64", n,
                     MedianUs([&] { SumOfSquaresCuda<double>(g, n, sum64, work64, false, nullptr); }), 4.0 * n));
  out.push_back(Make("sum of squares fp32", n,
                     MedianUs([&] { SumOfSquaresCuda<float>(g, n, sum32, work32, false, nullptr); }), 4.0 * n));
  out.push_back(Make("scale in place", n, MedianUs([&] { ScaleGradientCuda(g, n, 1.0f, nullptr); }), 8.0 * n));
  for (void* b : {static_cast<void*>(p), static_cast<void*>(m), static_cast<void*>(v), static_cast<void*>(g),
                  static_cast<void*>(sum64), static_cast<void*>(work64), static_cast<void*>(sum32),
                  static_cast<void*>(work32)}) {
    CUDA_CHECK(cudaFree(b));
  }
  return out;
}

int Main(int argc, char** argv) {
  const char* json_path = nullptr;
  if (!ParseJsonFlag(argc, argv, &json_path)) return 1;
  cudaDeviceProp prop;
  if (!BenchDeviceProps(&prop)) return 0;
  // The copy moves as many bytes as the AdamW step: 28 bytes per parameter, half read, half written.
  const size_t copy_bytes = static_cast<size_t>(14 * kParams);
  const double copy = MeasureCopyGbps(copy_bytes);
  std::vector<Result> results;
  for (int64_t n : {kParams, kOddParams}) {
    for (const Result& r : BenchAll(n)) results.push_back(r);
  }

  std::printf("optim CUDA kernels, fp32, on %s; device copy %.0f GB/s (%.0f MB D2D, read+write)\n\n", prop.name,
              copy, copy_bytes / 1e6);
  std::printf("| op | params | median us | MB moved | GB/s | of copy |\n|---|---:|---:|---:|---:|---:|\n");
  for (const Result& r : results) {
    std::printf("| %s | %lld | %.1f | %.1f | %.0f | %.0f%% |\n", r.op.c_str(), static_cast<long long>(r.n), r.us,
                r.bytes / 1e6, r.gbps, 100.0 * r.gbps / copy);
  }

  if (json_path != nullptr) {
    FILE* f = OpenJsonFile(json_path);
    if (f == nullptr) return 1;
    std::fprintf(f, "{\"device\": \"%s\", \"copy_gbps\": %.1f, \"copy_bytes\": %zu, \"iters\": %d, \"results\": [",
                 prop.name, copy, copy_bytes, kIters);
    for (size_t i = 0; i < results.size(); ++i) {
      const Result& r = results[i];
      std::fprintf(f, "%s\n  {\"op\": \"%s\", \"params\": %lld, \"median_us\": %.2f, \"bytes\": %.0f, \"gbps\": %.1f, "
                   "\"fraction_of_copy\": %.3f}", i ? "," : "", r.op.c_str(), static_cast<long long>(r.n), r.us,
                   r.bytes, r.gbps, r.gbps / copy);
    }
    std::fprintf(f, "\n]}\n");
    std::fclose(f);
  }
  return 0;
}

}  // namespace
}  // namespace indexcache

int main(int argc, char** argv) { return indexcache::Main(argc, argv); }
