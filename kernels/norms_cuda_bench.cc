// RmsNormCuda bf16 throughput at DeepSeek shapes, as a fraction of the device's copy bandwidth
// measured in the same run (RMSNorm is memory-bound: its bar is a device-to-device copy).
//
//   norms_cuda_bench [--json PATH]
//
// Prints a markdown table; with --json also writes the numbers to PATH. Exits 0 with
// "no CUDA device" where there is none, so CI can run it.
#include <cstdint>
#include <cstdio>
#include <functional>
#include <vector>

#include "core/cuda_check.h"
#include "kernels/bench_util.h"
#include "kernels/norms_cuda.h"

namespace indexcache {
namespace {

constexpr int kWarmup = 5;
constexpr int kIters = 50;

// Median of kIters timings (us) of fn() after kWarmup untimed runs.
double MedianUs(const std::function<void()>& fn) { return MedianMs(fn, kWarmup, kIters) * 1e3; }

struct Result {
  int64_t rows, dim;
  double us, bytes, gbps;
};

Result BenchRmsNorm(int64_t rows, int64_t dim) {
  const size_t n = rows * dim;
  __nv_bfloat16 *x, *w, *y;
  CUDA_CHECK(cudaMalloc(&x, n * sizeof(*x)));
  CUDA_CHECK(cudaMalloc(&w, dim * sizeof(*w)));
  CUDA_CHECK(cudaMalloc(&y, n * sizeof(*y)));
  // Bytes 0x3f make every bf16 0x3f3f (~0.75): finite values without a host fill of ~0.5 GB.
  CUDA_CHECK(cudaMemset(x, 0x3f, n * sizeof(*x)));
  CUDA_CHECK(cudaMemset(w, 0x3f, dim * sizeof(*w)));
  const double us = MedianUs([&] { RmsNormCuda(x, w, rows, dim, 1e-6f, y, nullptr); });
  CUDA_CHECK(cudaFree(x));
  CUDA_CHECK(cudaFree(w));
  CUDA_CHECK(cudaFree(y));
  const double bytes = (2.0 * n + dim) * sizeof(__nv_bfloat16);  // read x + weight, write out
  return {rows, dim, us, bytes, bytes / (us * 1e3)};
}

int Main(int argc, char** argv) {
  const char* json_path = nullptr;
  if (!ParseJsonFlag(argc, argv, &json_path)) return 1;
  cudaDeviceProp prop;
  if (!BenchDeviceProps(&prop)) return 0;
  const double copy = MeasureCopyGbps(size_t{1} << 30);  // 1 GiB
  std::vector<Result> results;
  for (const auto& [rows, dim] : std::vector<std::pair<int64_t, int64_t>>{{4096, 7168}, {32768, 7168}, {16384, 1536}}) {
    results.push_back(BenchRmsNorm(rows, dim));
  }

  std::printf("RmsNormCuda bf16 on %s; device copy %.0f GB/s (1 GiB D2D, read+write)\n\n", prop.name, copy);
  std::printf("| rows | dim | median us | MB moved | GB/s | of copy |\n|---:|---:|---:|---:|---:|---:|\n");
  for (const Result& r : results) {
    std::printf("| %lld | %lld | %.1f | %.1f | %.0f | %.0f%% |\n", static_cast<long long>(r.rows),
                static_cast<long long>(r.dim), r.us, r.bytes / 1e6, r.gbps, 100.0 * r.gbps / copy);
  }

  if (json_path != nullptr) {
    FILE* f = OpenJsonFile(json_path);
    if (f == nullptr) return 1;
    std::fprintf(f, "{\"device\": \"%s\", \"copy_gbps\": %.1f, \"iters\": %d, \"rms_norm_bf16\": [", prop.name, copy,
                 kIters);
    for (size_t i = 0; i < results.size(); ++i) {
      const Result& r = results[i];
      std::fprintf(f, "%s\n  {\"rows\": %lld, \"dim\": %lld, \"median_us\": %.2f, \"bytes\": %.0f, \"gbps\": %.1f, "
                   "\"fraction_of_copy\": %.3f}", i ? "," : "", static_cast<long long>(r.rows),
                   static_cast<long long>(r.dim), r.us, r.bytes, r.gbps, r.gbps / copy);
    }
    std::fprintf(f, "\n]}\n");
    std::fclose(f);
  }
  return 0;
}

}  // namespace
}  // namespace indexcache

int main(int argc, char** argv) { return indexcache::Main(argc, argv); }
