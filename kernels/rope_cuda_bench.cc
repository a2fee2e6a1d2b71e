// Times RopeCuda (kernels/rope_cuda.h) on the DeepSeek-V3.2 rope rows of an 8192-token prefill
// chunk: MLA q (interleaved, 128 heads x 64 rope dims at offset 128 of 192), the indexer's q
// (half-split, 64 heads x 64 of 128) and k (half-split, one head x 64 of 128), bf16 in place. The
// kernel is bandwidth-bound: the floor is its bytes moved (the rotated dims read and written, the
// tables once) over the device copy bandwidth measured in the same run. (elementwise_cuda_bench
// keeps its MLA q rope row, the same shape as the first row here.)
//   rope_cuda_bench [--json PATH]
#include <cstdio>
#include <functional>
#include <string>
#include <vector>

#include "core/cuda_check.h"
#include "kernels/bench_util.h"
#include "kernels/rope_cuda.h"

namespace indexcache {
namespace {

using bf16 = __nv_bfloat16;

struct Result {
  std::string name;
  double us, bytes;
};

int Main(int argc, char** argv) {
  const char* json_path = nullptr;
  if (!ParseJsonFlag(argc, argv, &json_path)) return 1;
  cudaDeviceProp prop;
  if (!BenchDeviceProps(&prop)) return 0;
  const double copy = MeasureCopyGbps(size_t(1) << 30);
  constexpr int64_t T = 8192, heads = 128, qk = 192, rope = 64, index_heads = 64, index_dim = 128;
  constexpr int kWarmup = 3, kIters = 20;
  std::vector<Result> results;
  auto time = [&](const std::string& name, double bytes, const std::function<void()>& fn) {
    results.push_back({name, MedianMs(fn, kWarmup, kIters) * 1e3, bytes});
  };
  bf16* q = DeviceAlloc<bf16>(size_t(T) * heads * qk);
  bf16* iq = DeviceAlloc<bf16>(size_t(T) * index_heads * index_dim);
  bf16* ik = DeviceAlloc<bf16>(size_t(T) * index_dim);
  FillRandomBf16(q, size_t(T) * heads * qk, 1);
  FillRandomBf16(iq, size_t(T) * index_heads * index_dim, 2);
  FillRandomBf16(ik, size_t(T) * index_dim, 3);
  // cos = 1, sin = 0 keeps the data unchanged from run to run (the kernel does the same work).
  std::vector<float> ones(size_t(T) * rope / 2, 1.0f);
  float* cos = DeviceAlloc<float>(ones.size());
  float* sin = DeviceAlloc<float>(ones.size());
  CUDA_CHECK(cudaMemcpy(cos, ones.data(), ones.size() * 4, cudaMemcpyHostToDevice));
  CUDA_CHECK(cudaMemset(sin, 0, ones.size() * 4));
  const double tables = 2.0 * T * (rope / 2) * 4;

  time("rope q MLA (128 heads x 64 of 192, interleaved)", 2.0 * T * heads * rope * 2 + tables, [&] {
    RopeCuda(cos, sin, T, rope / 2, true, heads, heads * qk, qk, 128, q, nullptr);
  });
  time("rope q indexer (64 heads x 64 of 128, half-split)", 2.0 * T * index_heads * rope * 2 + tables, [&] {
    RopeCuda(cos, sin, T, rope / 2, false, index_heads, index_heads * index_dim, index_dim, 0, iq, nullptr);
  });
  time("rope k indexer (1 head x 64 of 128, half-split)", 2.0 * T * rope * 2 + tables, [&] {
    RopeCuda(cos, sin, T, rope / 2, false, 1, index_dim, index_dim, 0, ik, nullptr);
  });

  std::printf("rope, bf16 in place, T = %lld, on %s; device copy %.0f GB/s\n\n", static_cast<long long>(T),
              prop.name, copy);
  std::printf("| rows | median us | MB moved | GB/s | of copy |\n|---|---:|---:|---:|---:|\n");
  for (const Result& r : results) {
    const double gbps = r.bytes / (r.us * 1e-6) / 1e9;
    std::printf("| %s | %.1f | %.1f | %.0f | %.0f%% |\n", r.name.c_str(), r.us, r.bytes / 1e6, gbps, 100 * gbps / copy);
  }
  if (json_path) {
    FILE* f = OpenJsonFile(json_path);
    if (!f) return 1;
    std::fprintf(f, "{\"device\": \"%s\", \"copy_gbps\": %.1f, \"results\": [", prop.name, copy);
    for (size_t i = 0; i < results.size(); ++i) {
      std::fprintf(f, "%s\n  {\"kernel\": \"%s\", \"median_us\": %.2f, \"bytes\": %.0f}", i ? "," : "",
                   results[i].name.c_str(), results[i].us, results[i].bytes);
    }
    std::fprintf(f, "\n]}\n");
    std::fclose(f);
  }
  for (void* p : std::vector<void*>{q, iq, ik, cos, sin}) CUDA_CHECK(cudaFree(p));
  return 0;
}

}  // namespace
}  // namespace indexcache

int main(int argc, char** argv) { return indexcache::Main(argc, argv); }
