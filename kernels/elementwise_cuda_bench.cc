// Times the small forward kernels (kernels/elementwise_cuda.h) at DeepSeek-V3.2 sizes for an
// 8192-token prefill chunk. They are bandwidth-bound: the floor is their bytes moved over the
// device copy bandwidth measured in the same run.
//   elementwise_cuda_bench [--json PATH]
#include <cstdio>
#include <functional>
#include <string>
#include <vector>

#include "core/cuda_check.h"
#include "kernels/bench_util.h"
#include "kernels/elementwise_cuda.h"
#include "kernels/rope_cuda.h"

namespace indexcache {
namespace {

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
  constexpr int64_t T = 8192, H = 7168, I = 18432, heads = 128, qk = 192, kv = 512, rope = 64, V = 32000;
  constexpr int kWarmup = 3, kIters = 20;
  std::vector<Result> results;
  auto time = [&](const std::string& name, double bytes, const std::function<void()>& fn) {
    results.push_back({name, MedianMs(fn, kWarmup, kIters) * 1e3, bytes});
  };
  bf16* big = NewRandomBf16(size_t(T) * I, 1);
  bf16* up = NewRandomBf16(size_t(T) * I, 2);
  bf16* h = NewRandomBf16(size_t(T) * H, 3);
  bf16* table = NewRandomBf16(size_t(V) * H, 4);
  bf16* q = NewRandomBf16(size_t(T) * heads * qk, 5);
  bf16* ckv = NewRandomBf16(size_t(T) * (kv + rope), 6);
  bf16* latent = DeviceAlloc<bf16>(size_t(T) * (kv + rope));
  bf16* w = NewRandomBf16(H, 7);
  bf16* out = DeviceAlloc<bf16>(size_t(T) * I);
  std::vector<int32_t> ids(T), rows(T / 4);
  for (int64_t t = 0; t < T; ++t) ids[t] = static_cast<int32_t>((t * 7919) % V);
  for (size_t i = 0; i < rows.size(); ++i) rows[i] = static_cast<int32_t>(i * 4);
  int32_t* d_ids = DeviceAlloc<int32_t>(T);
  int32_t* d_rows = DeviceAlloc<int32_t>(rows.size());
  float* scale = DeviceAlloc<float>(rows.size());
  float* cos = DeviceAlloc<float>(size_t(T) * rope / 2);
  float* sin = DeviceAlloc<float>(size_t(T) * rope / 2);
  CUDA_CHECK(cudaMemcpy(d_ids, ids.data(), ids.size() * 4, cudaMemcpyHostToDevice));
  CUDA_CHECK(cudaMemcpy(d_rows, rows.data(), rows.size() * 4, cudaMemcpyHostToDevice));
  CUDA_CHECK(cudaMemset(scale, 0, rows.size() * 4));
  CUDA_CHECK(cudaMemset(cos, 0, size_t(T) * rope / 2 * 4));
  CUDA_CHECK(cudaMemset(sin, 0, size_t(T) * rope / 2 * 4));

  const double n_mlp = double(T) * I, n_h = double(T) * H;
  time("embedding [8192 x 7168]", 2 * n_h * 2, [&] { EmbeddingCuda(table, d_ids, T, H, out, nullptr); });
  time("silu_mul [8192 x 18432]", 3 * n_mlp * 2, [&] { SiluMulCuda(big, up, T * I, out, nullptr); });
  time("add [8192 x 7168]", 3 * n_h * 2, [&] { AddCuda(h, T * H, out, nullptr); });
  time("rope q (128 heads x 64 of 192)", 2.0 * T * heads * rope * 2, [&] {
    RopeCuda(cos, sin, T, rope / 2, true, heads, heads * qk, qk, 128, q, nullptr);
  });
  time("mla_latent [8192 x 576]", 2.0 * T * (kv + rope) * 2, [&] {
    MlaLatentCuda(ckv, w, 1e-6f, cos, sin, T, kv, rope / 2, latent, nullptr);
  });
  time("layer_norm [8192 x 128]", 2.0 * T * 128 * 2, [&] { LayerNormCuda(h, w, w, T, 128, 1e-6f, out, nullptr); });
  time("gather_rows [2048 of 8192 x 7168]", 2.0 * rows.size() * H * 2, [&] {
    GatherRowsCuda(h, d_rows, static_cast<int64_t>(rows.size()), H, out, nullptr);
  });
  time("scatter_add_rows [2048 x 7168]", 3.0 * rows.size() * H * 2, [&] {
    ScatterAddRowsCuda(h, d_rows, scale, static_cast<int64_t>(rows.size()), H, out, nullptr);
  });

  std::printf("elementwise kernels, bf16, on %s; device copy %.0f GB/s\n\n", prop.name, copy);
  std::printf("| kernel | median us | MB moved | GB/s | of copy |\n|---|---:|---:|---:|---:|\n");
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
  for (void* p : std::vector<void*>{big, up, h, table, q, ckv, latent, w, out, d_ids, d_rows, scale, cos, sin}) {
    CUDA_CHECK(cudaFree(p));
  }
  return 0;
}

}  // namespace
}  // namespace indexcache

int main(int argc, char** argv) { return indexcache::Main(argc, argv); }
