// CrossEntropyRowsCuda throughput at eval shapes (8K-32K rows, vocabularies of the reference model,
// the synthetic stack and DeepSeek-V3.2), against the device's copy bandwidth measured in the same
// run. The kernel reads each logit once for the max and once for the sum: its floor is one read of
// the matrix at copy speed; "x floor" says how far above that it lands.
//
//   cross_entropy_cuda_bench [--json PATH]
//
// Exits 0 with "no CUDA device" where there is none.
#include <cstdint>
#include <cstdio>
#include <vector>

#include "core/cuda_check.h"
#include "kernels/bench_util.h"
#include "kernels/cross_entropy_cuda.h"

namespace indexcache {
namespace {

constexpr int kWarmup = 3;
constexpr int kIters = 20;

struct Result {
  int64_t rows, vocab;
  double ms, gbps, floor_ms;
};

Result Bench(int64_t rows, int64_t vocab, double copy_gbps) {
  float* logits;
  int32_t* targets;
  double* nll;
  CUDA_CHECK(cudaMalloc(&logits, rows * vocab * sizeof(float)));
  CUDA_CHECK(cudaMalloc(&targets, rows * sizeof(int32_t)));
  CUDA_CHECK(cudaMalloc(&nll, rows * sizeof(double)));
  CUDA_CHECK(cudaMemset(logits, 0x3f, rows * vocab * sizeof(float)));  // 0.75: finite
  CUDA_CHECK(cudaMemset(targets, 0, rows * sizeof(int32_t)));
  const double ms = MedianMs([&] { CrossEntropyRowsCuda(logits, targets, rows, vocab, nll, nullptr); }, kWarmup, kIters);
  CUDA_CHECK(cudaFree(logits));
  CUDA_CHECK(cudaFree(targets));
  CUDA_CHECK(cudaFree(nll));
  const double bytes = static_cast<double>(rows) * vocab * sizeof(float);
  // Copy bandwidth counts read + write; one read at that rate moves bytes in bytes / copy_gbps.
  const double floor_ms = bytes / (copy_gbps * 1e6);
  return {rows, vocab, ms, bytes / (ms * 1e6), floor_ms};
}

int Main(int argc, char** argv) {
  const char* json_path = nullptr;
  if (!ParseJsonFlag(argc, argv, &json_path)) return 1;
  cudaDeviceProp prop;
  if (!BenchDeviceProps(&prop)) return 0;
  const double copy = MeasureCopyGbps(size_t{1} << 30);
  std::vector<Result> results;
  for (const auto& [rows, vocab] :
       std::vector<std::pair<int64_t, int64_t>>{{8192, 8192}, {8192, 32000}, {32768, 32000}, {8192, 129280}}) {
    results.push_back(Bench(rows, vocab, copy));
  }
  std::printf("CrossEntropyRowsCuda on %s; device copy %.0f GB/s (read+write)\n\n", prop.name, copy);
  std::printf("| rows | vocab | median ms | GB/s read | floor ms | x floor |\n|---:|---:|---:|---:|---:|---:|\n");
  for (const Result& r : results) {
    std::printf("| %lld | %lld | %.3f | %.0f | %.3f | %.2f |\n", static_cast<long long>(r.rows),
                static_cast<long long>(r.vocab), r.ms, r.gbps, r.floor_ms, r.ms / r.floor_ms);
  }
  if (json_path != nullptr) {
    FILE* f = OpenJsonFile(json_path);
    if (f == nullptr) return 1;
    std::fprintf(f, "{\"device\": \"%s\", \"copy_gbps\": %.1f, \"cross_entropy\": [", prop.name, copy);
    for (size_t i = 0; i < results.size(); ++i) {
      const Result& r = results[i];
      std::fprintf(f, "%s\n  {\"rows\": %lld, \"vocab\": %lld, \"median_ms\": %.4f, \"gbps\": %.1f, \"floor_ms\": %.4f}",
                   i ? "," : "", static_cast<long long>(r.rows), static_cast<long long>(r.vocab), r.ms, r.gbps,
                   r.floor_ms);
    }
    std::fprintf(f, "\n]}\n");
    std::fclose(f);
  }
  return 0;
}

}  // namespace
}  // namespace indexcache

int main(int argc, char** argv) { return indexcache::Main(argc, argv); }
