// The FP8 latent cache kernels at DeepSeek-V3.2's row (512 e4m3 + 4 scales + 64 bf16 = 656 bytes)
// against the device's copy bandwidth measured in the same run (read + write bytes per second).
//  - quantise: a prefill's worth of new rows (32K) scattered into a pool, and one decode step's
//    (B rows; launch-bound);
//  - dequantising gather: a decode step's B x 2048 selected rows out of B requests of 32K tokens
//    each (random rows of each request's range), what DsaModel::DecodeStep does per layer with an
//    FP8 cache before its sparse MLA.
// Bytes per row: quantise reads 1152 and writes 656; the gather reads 656 (+4 of index) and writes
// 1152. floor = bytes / copy rate.
//
//   latent_fp8_cuda_bench [--json PATH]
//
// Exits 0 with "no CUDA device" where there is none.
#include <cstdint>
#include <cstdio>
#include <random>
#include <string>
#include <vector>

#include "core/cuda_check.h"
#include "kernels/bench_util.h"
#include "kernels/latent_fp8_cuda.h"

namespace indexcache {
namespace {

constexpr int kWarmup = 3;
constexpr int kIters = 20;

struct Result {
  std::string op;
  int64_t rows;
  double ms, gbps, floor_ms;
};

Result Time(const std::string& op, int64_t rows, double bytes_per_row, double copy_gbps, const std::function<void()>& fn) {
  const double ms = MedianMs(fn, kWarmup, kIters);
  const double bytes = bytes_per_row * double(rows);
  return {op, rows, ms, bytes / (ms * 1e6), bytes / (copy_gbps * 1e6)};
}

int Main(int argc, char** argv) {
  const char* json_path = nullptr;
  if (!ParseJsonFlag(argc, argv, &json_path)) return 1;
  cudaDeviceProp prop;
  if (!BenchDeviceProps(&prop)) return 0;
  const double copy = MeasureCopyGbps(size_t{1} << 30);
  LatentFp8Layout layout;
  layout.nope = 512;
  layout.rope = 64;
  const int64_t dim = layout.dim(), row_bytes = layout.row_bytes();
  const int64_t ctx = 32768, max_batch = 128, topk = 2048;
  const int64_t pool = max_batch * ctx;
  uint8_t* cache = DeviceAlloc<uint8_t>(size_t(pool * row_bytes));
  __nv_bfloat16* src = DeviceAlloc<__nv_bfloat16>(size_t(ctx * dim));
  __nv_bfloat16* out = DeviceAlloc<__nv_bfloat16>(size_t(max_batch * topk * dim));
  int32_t* rows = DeviceAlloc<int32_t>(size_t(max_batch * topk));
  FillRandomBf16(src, size_t(ctx * dim), 1);
  std::mt19937 rng(2);
  std::vector<Result> results;
  // Fill the whole pool (each request's rows from the same random source rows).
  {
    std::vector<int32_t> r(ctx);
    for (int64_t b = 0; b < max_batch; ++b) {
      for (int64_t i = 0; i < ctx; ++i) r[i] = static_cast<int32_t>(b * ctx + i);
      CUDA_CHECK(cudaMemcpy(rows, r.data(), ctx * sizeof(int32_t), cudaMemcpyHostToDevice));
      QuantizeLatentRowsCuda(src, rows, ctx, layout, cache, nullptr);
    }
    CUDA_CHECK(cudaDeviceSynchronize());
  }
  const double q_bytes = 2.0 * dim + row_bytes + 4, g_bytes = row_bytes + 4 + 2.0 * dim;
  for (int64_t n : {int64_t{64}, int64_t{128}, ctx}) {
    std::vector<int32_t> r(n);
    for (int64_t i = 0; i < n; ++i) r[i] = static_cast<int32_t>(n == ctx ? i : i * ctx + ctx - 1);
    CUDA_CHECK(cudaMemcpy(rows, r.data(), n * sizeof(int32_t), cudaMemcpyHostToDevice));
    results.push_back(Time("quantise", n, q_bytes, copy, [&] { QuantizeLatentRowsCuda(src, rows, n, layout, cache, nullptr); }));
  }
  for (int64_t B : {int64_t{32}, int64_t{64}, max_batch}) {
    std::vector<int32_t> r(B * topk);
    std::uniform_int_distribution<int32_t> pick(0, static_cast<int32_t>(ctx - 1));
    for (int64_t b = 0; b < B; ++b) {
      for (int64_t j = 0; j < topk; ++j) r[b * topk + j] = static_cast<int32_t>(b * ctx + pick(rng));
    }
    CUDA_CHECK(cudaMemcpy(rows, r.data(), r.size() * sizeof(int32_t), cudaMemcpyHostToDevice));
    results.push_back(Time("gather B=" + std::to_string(B), B * topk, g_bytes, copy,
                           [&] { DequantizeLatentRowsCuda(cache, rows, B * topk, layout, out, nullptr); }));
  }
  CUDA_CHECK(cudaFree(cache));
  CUDA_CHECK(cudaFree(src));
  CUDA_CHECK(cudaFree(out));
  CUDA_CHECK(cudaFree(rows));
  std::printf("FP8 latent cache kernels (576 = 512 e4m3 + 64 bf16, 656-byte rows) on %s; device copy %.0f GB/s "
              "(read+write)\n\n| op | rows | median ms | GB/s (read+write) | floor ms | x floor |\n"
              "|---|---:|---:|---:|---:|---:|\n", prop.name, copy);
  for (const Result& r : results) {
    std::printf("| %s | %lld | %.4f | %.0f | %.4f | %.2f |\n", r.op.c_str(), static_cast<long long>(r.rows), r.ms,
                r.gbps, r.floor_ms, r.ms / r.floor_ms);
  }
  if (json_path != nullptr) {
    FILE* f = OpenJsonFile(json_path);
    if (f == nullptr) return 1;
    std::fprintf(f, "{\"device\": \"%s\", \"copy_gbps\": %.1f, \"latent_fp8\": [", prop.name, copy);
    for (size_t i = 0; i < results.size(); ++i) {
      const Result& r = results[i];
      std::fprintf(f, "%s\n  {\"op\": \"%s\", \"rows\": %lld, \"median_ms\": %.5f, \"gbps\": %.1f, \"floor_ms\": %.5f}",
                   i ? "," : "", r.op.c_str(), static_cast<long long>(r.rows), r.ms, r.gbps, r.floor_ms);
    }
    std::fprintf(f, "\n]}\n");
    std::fclose(f);
  }
  return 0;
}

}  // namespace
}  // namespace indexcache

int main(int argc, char** argv) { return indexcache::Main(argc, argv); }
