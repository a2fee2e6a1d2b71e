// Gradient clipping on the GPU (optim/clip_cuda.h): the deterministic sum of squares (fp64 and
// fp32 accumulation) and the in-place scale, as a fraction of the device's copy bandwidth measured
// in the same run (all memory-bound: their bar is a device-to-device copy).
//
//   clip_cuda_bench [--json PATH]
//
// Rows: single buffers from small (launch-bound) to large (bandwidth-bound), one odd size; then
// the whole clipping of one DeepSeek-V3.2 indexer's gradients as the trainer runs it, layer by
// layer: five buffers (wq_b 8192 x 1536, wk 128 x 7168, weights_proj 64 x 7168, k_norm weight and
// bias 128) accumulated into one sum of squares, then each scaled, for 15 trained layers. Bytes
// count reads (sum of squares: 4 per value) and reads + writes (scale: 8 per value). Warm-up runs,
// CUDA events, medians. Prints a markdown table; with --json also writes the numbers to PATH. Exits
// 0 with "no CUDA device" where there is none, so CI can run it.
#include <cstdint>
#include <cstdio>
#include <functional>
#include <string>
#include <vector>

#include "core/cuda_check.h"
#include "core/device_buffer.h"
#include "kernels/bench_util.h"
#include "optim/clip_cuda.h"

namespace indexcache {
namespace {

constexpr int kWarmup = 5;
constexpr int kIters = 50;

// Median of kIters timings (us) of fn() after kWarmup untimed runs.
double MedianUs(const std::function<void()>& fn) { return MedianMs(fn, kWarmup, kIters) * 1e3; }

struct Result {
  std::string op;
  int64_t n;  // values touched
  double us, bytes, gbps;
};

Result Make(const std::string& op, int64_t n, double us, double bytes) { return {op, n, us, bytes, bytes / (us * 1e3)}; }

void BenchBuffer(int64_t n, std::vector<Result>* out) {
  DeviceBuffer<float> g(n);
  // Bytes 0x3c make every float 0x3c3c3c3c (~0.0115): finite, and scaling by 1 keeps them so.
  CUDA_CHECK(cudaMemset(g.ptr, 0x3c, g.bytes));
  DeviceBuffer<double> sum64(1), work64(kSumOfSquaresWorkspace);
  DeviceBuffer<float> sum32(1), work32(kSumOfSquaresWorkspace);
  out->push_back(Make("sum of squares fp64", n,
                      MedianUs([&] { SumOfSquaresCuda<double>(g.ptr, n, sum64.ptr, work64.ptr, false, nullptr); }),
                      4.0 * n));
  out->push_back(Make("sum of squares fp32", n,
                      MedianUs([&] { SumOfSquaresCuda<float>(g.ptr, n, sum32.ptr, work32.ptr, false, nullptr); }),
                      4.0 * n));
  out->push_back(Make("scale in place", n, MedianUs([&] { ScaleGradientCuda(g.ptr, n, 1.0f, nullptr); }), 8.0 * n));
}

// One clipping of `layers` DeepSeek-V3.2 indexers' gradients: the norm over every buffer (fp64),
// then the scale of every buffer (coefficient 1, so the values stay put run to run). The norm's
// host read-back is left out: it is one 8-byte copy per step.
void BenchIndexerClip(int layers, std::vector<Result>* out) {
  const std::vector<int64_t> sizes = {8192 * 1536, 128 * 7168, 64 * 7168, 128, 128};
  std::vector<DeviceBuffer<float>> grads;
  int64_t total = 0;
  for (int l = 0; l < layers; ++l) {
    for (int64_t n : sizes) {
      grads.emplace_back(n);
      CUDA_CHECK(cudaMemset(grads.back().ptr, 0x3c, grads.back().bytes));
      total += n;
    }
  }
  DeviceBuffer<double> sum(1), work(kSumOfSquaresWorkspace);
  const double norm_us = MedianUs([&] {
    for (size_t i = 0; i < grads.size(); ++i) {
      SumOfSquaresCuda<double>(grads[i].ptr, static_cast<int64_t>(grads[i].size()), sum.ptr, work.ptr, i > 0, nullptr);
    }
  });
  const double scale_us = MedianUs([&] {
    for (auto& g : grads) ScaleGradientCuda(g.ptr, static_cast<int64_t>(g.size()), 1.0f, nullptr);
  });
  const std::string what = std::to_string(layers) + " indexers (" + std::to_string(grads.size()) + " buffers)";
  out->push_back(Make("global norm fp64, " + what, total, norm_us, 4.0 * total));
  out->push_back(Make("scale, " + what, total, scale_us, 8.0 * total));
}

int Main(int argc, char** argv) {
  const char* json_path = nullptr;
  if (!ParseJsonFlag(argc, argv, &json_path)) return 1;
  cudaDeviceProp prop;
  if (!BenchDeviceProps(&prop)) return 0;
  const double copy = MeasureCopyGbps(size_t{1} << 30);  // 1 GiB
  std::vector<Result> results;
  for (int64_t n : {int64_t{1} << 16, int64_t{1} << 20, int64_t{13'000'000}, int64_t{13'000'001}, int64_t{1} << 28}) {
    BenchBuffer(n, &results);
  }
  BenchIndexerClip(15, &results);

  std::printf("gradient clipping CUDA kernels, fp32 values, on %s; device copy %.0f GB/s (1 GiB D2D, read+write)\n\n",
              prop.name, copy);
  std::printf("| op | values | median us | MB moved | GB/s | of copy |\n|---|---:|---:|---:|---:|---:|\n");
  for (const Result& r : results) {
    std::printf("| %s | %lld | %.1f | %.1f | %.0f | %.0f%% |\n", r.op.c_str(), static_cast<long long>(r.n), r.us,
                r.bytes / 1e6, r.gbps, 100.0 * r.gbps / copy);
  }

  if (json_path != nullptr) {
    FILE* f = OpenJsonFile(json_path);
    if (f == nullptr) return 1;
    std::fprintf(f, "{\"device\": \"%s\", \"copy_gbps\": %.1f, \"iters\": %d, \"results\": [", prop.name, copy, kIters);
    for (size_t i = 0; i < results.size(); ++i) {
      const Result& r = results[i];
      std::fprintf(f, "%s\n  {\"op\": \"%s\", \"values\": %lld, \"median_us\": %.2f, \"bytes\": %.0f, \"gbps\": %.1f, "
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
