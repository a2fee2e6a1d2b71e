// IndexerTopkCuda (scores + exact top-k, one call) at DeepSeek-V3.2 sizes: H = 64, D = 128,
// topk = 2048, 2048 queries at the end of contexts of L = 8K, 32K, 128K keys
// (query_offset = L - 2048, causal). Reports the median time, TFLOP/s counting
// 2 * T * L_eff * H * D (L_eff = the causal average of visible keys), that rate as a fraction of a
// bf16 cuBLAS GEMM (8192^3) measured in the same run, and the time over the bf16 floor
// (FLOPs / 780 TFLOP/s, the H100 SXM figure of docs/reference).
//
// Decode rows: one query (T = 1, query_offset = L - 1) over L = 8K, 32K, 128K keys, the shape of a
// one-token decode step. Reported: the median time, the keys' bytes (L * D * 2) over that time in
// GB/s and as a fraction of a device-to-device copy (MeasureCopyGbps of 1 GiB, counting read +
// write) measured in the same run. The keys rotate through copies spread over 256 MiB, so every
// timed call reads them from HBM, not from the 50 MB L2 (a real decode step touches the other
// layers' caches in between).
//
//   indexer_topk_cuda_bench [--json PATH]
//
// Prints a markdown table; with --json also writes the numbers to PATH. Exits 0 with
// "no CUDA device" where there is none, so CI can run it.
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <vector>

#include "core/cuda_check.h"
#include "kernels/bench_util.h"
#include "kernels/indexer_topk_cuda.h"

namespace indexcache {
namespace {

constexpr double kFloorTflops = 780.0;  // bf16 dense GEMM on an H100 SXM (reference doc)

struct Result {
  int64_t L;
  double ms, flops, tflops;
};

struct DecodeResult {
  int64_t L;
  double ms, gbps;
};

int Main(int argc, char** argv) {
  const char* json_path = nullptr;
  if (!ParseJsonFlag(argc, argv, &json_path)) return 1;
  cudaDeviceProp prop;
  if (!BenchDeviceProps(&prop)) return 0;
  const double gemm = MeasureBf16GemmTflops(8192);
  const double copy_gbps = MeasureCopyGbps(size_t{1} << 30);

  constexpr int64_t T = 2048, H = 64, D = 128, kTopk = 2048;
  const std::vector<int64_t> lengths = {8192, 32768, 131072};
  const int64_t max_l = lengths.back();
  uint16_t *q, *k;
  float* w;
  int32_t* out_idx;
  float* out_sc;
  CUDA_CHECK(cudaMalloc(&q, T * H * D * 2));
  CUDA_CHECK(cudaMalloc(&k, max_l * D * 2));
  CUDA_CHECK(cudaMalloc(&w, T * H * sizeof(float)));
  CUDA_CHECK(cudaMalloc(&out_idx, T * kTopk * sizeof(int32_t)));
  CUDA_CHECK(cudaMalloc(&out_sc, T * kTopk * sizeof(float)));
  // One random stream per buffer: no query or key repeats.
  FillRandomBf16(q, T * H * D, 1);
  FillRandomBf16(k, max_l * D, 100);
  {
    std::vector<float> hw(T * H);
    uint64_t s = 77;
    for (float& v : hw) {
      s = s * 6364136223846793005ull + 1442695040888963407ull;
      v = static_cast<float>((s >> 40) & 0xffffff) / static_cast<float>(1 << 24) / 8.f;  // U(0,1) * 64^-0.5
    }
    CUDA_CHECK(cudaMemcpy(w, hw.data(), hw.size() * sizeof(float), cudaMemcpyHostToDevice));
  }

  IndexerTopkCudaParams p;
  p.q = reinterpret_cast<const __nv_bfloat16*>(q);
  p.k = reinterpret_cast<const __nv_bfloat16*>(k);
  p.weights = w;
  p.T = T;
  p.H = H;
  p.D = D;
  p.topk = kTopk;
  p.scale = 1.f / std::sqrt(static_cast<float>(D));
  p.out_indices = out_idx;
  p.out_scores = out_sc;
  p.workspace_bytes = IndexerTopkCudaWorkspaceBytes(p);
  CUDA_CHECK(cudaMalloc(&p.workspace, p.workspace_bytes));

  std::vector<Result> results;
  for (int64_t L : lengths) {
    p.L = L;
    p.query_offset = L - T;
    const int iters = L >= 131072 ? 9 : 21;
    const double ms = MedianMs([&] { IndexerTopkCuda(p); }, 2, iters);
    const double l_eff = static_cast<double>(L - T) + (T + 1) / 2.0;
    const double flops = 2.0 * T * l_eff * H * D;
    results.push_back({L, ms, flops, flops / (ms * 1e9)});
  }
  // Sanity: the last call's first row has no -1 and strictly ordered scores.
  {
    std::vector<int32_t> idx(kTopk);
    std::vector<float> sc(kTopk);
    CUDA_CHECK(cudaMemcpy(idx.data(), out_idx, kTopk * 4, cudaMemcpyDeviceToHost));
    CUDA_CHECK(cudaMemcpy(sc.data(), out_sc, kTopk * 4, cudaMemcpyDeviceToHost));
    for (int j = 0; j < kTopk; ++j) {
      if (idx[j] < 0 || (j > 0 && sc[j] > sc[j - 1])) {
        std::fprintf(stderr, "sanity check failed at %d\n", j);
        return 1;
      }
    }
  }

  // Decode: T = 1 over a rotating set of key copies (cold L2).
  std::vector<DecodeResult> decode;
  {
    constexpr size_t kPoolElems = (size_t{256} << 20) / 2;  // 256 MiB of bf16 keys
    uint16_t* pool;
    CUDA_CHECK(cudaMalloc(&pool, kPoolElems * 2));
    FillRandomBf16(pool, kPoolElems, 200);
    IndexerTopkCudaParams d = p;
    d.T = 1;
    d.workspace = nullptr;
    for (int64_t L : lengths) {
      d.L = L;
      d.query_offset = L - 1;
      d.workspace_bytes = IndexerTopkCudaWorkspaceBytes(d);
      CUDA_CHECK(cudaMalloc(&d.workspace, d.workspace_bytes));
      const size_t copies = kPoolElems / static_cast<size_t>(L * D);
      size_t next = 0;
      const double ms = MedianMs(
          [&] {
            d.k = reinterpret_cast<const __nv_bfloat16*>(pool + (next++ % copies) * static_cast<size_t>(L * D));
            IndexerTopkCuda(d);
          },
          3, 51);
      decode.push_back({L, ms, static_cast<double>(L) * D * 2 / (ms * 1e6)});
      // Sanity: a full row (L >= topk valid keys), ordered.
      std::vector<int32_t> idx(kTopk);
      std::vector<float> sc(kTopk);
      CUDA_CHECK(cudaMemcpy(idx.data(), out_idx, kTopk * 4, cudaMemcpyDeviceToHost));
      CUDA_CHECK(cudaMemcpy(sc.data(), out_sc, kTopk * 4, cudaMemcpyDeviceToHost));
      for (int j = 0; j < kTopk; ++j) {
        if (idx[j] < 0 || idx[j] >= L || (j > 0 && sc[j] > sc[j - 1])) {
          std::fprintf(stderr, "decode sanity check failed at L=%lld j=%d\n", static_cast<long long>(L), j);
          return 1;
        }
      }
      CUDA_CHECK(cudaFree(d.workspace));
    }
    CUDA_CHECK(cudaFree(pool));
  }

  std::printf("IndexerTopkCuda on %s: T=%lld H=%lld D=%lld topk=%lld, causal, query_offset = L - T\n",
              prop.name, static_cast<long long>(T), static_cast<long long>(H), static_cast<long long>(D),
              static_cast<long long>(kTopk));
  std::printf("cuBLAS bf16 GEMM 8192^3: %.0f TFLOP/s; floor = FLOPs / %.0f TFLOP/s\n\n", gemm, kFloorTflops);
  std::printf("| L | median ms | TFLOP/s | of cuBLAS | floor ms | x floor |\n|---:|---:|---:|---:|---:|---:|\n");
  for (const Result& r : results) {
    const double floor_ms = r.flops / (kFloorTflops * 1e9);
    std::printf("| %lld | %.3f | %.0f | %.0f%% | %.2f | %.2f |\n", static_cast<long long>(r.L), r.ms, r.tflops,
                100.0 * r.tflops / gemm, floor_ms, r.ms / floor_ms);
  }
  std::printf("\nDecode (T = 1, query_offset = L - 1, keys cold in L2); copy ceiling %.0f GB/s (read + write)\n\n",
              copy_gbps);
  std::printf("| L | median us | keys MB | GB/s of keys | of copy |\n|---:|---:|---:|---:|---:|\n");
  for (const DecodeResult& r : decode) {
    std::printf("| %lld | %.1f | %.1f | %.0f | %.0f%% |\n", static_cast<long long>(r.L), r.ms * 1e3,
                static_cast<double>(r.L) * D * 2 / 1e6, r.gbps, 100.0 * r.gbps / copy_gbps);
  }

  if (json_path != nullptr) {
    FILE* f = OpenJsonFile(json_path);
    if (f == nullptr) return 1;
    std::fprintf(f, "{\"device\": \"%s\", \"cublas_bf16_tflops\": %.1f, \"floor_tflops\": %.1f, \"T\": %lld, "
                 "\"H\": %lld, \"D\": %lld, \"topk\": %lld, \"indexer_topk\": [", prop.name, gemm, kFloorTflops,
                 static_cast<long long>(T), static_cast<long long>(H), static_cast<long long>(D),
                 static_cast<long long>(kTopk));
    for (size_t i = 0; i < results.size(); ++i) {
      const Result& r = results[i];
      const double floor_ms = r.flops / (kFloorTflops * 1e9);
      std::fprintf(f, "%s\n  {\"L\": %lld, \"median_ms\": %.4f, \"flops\": %.4g, \"tflops\": %.1f, "
                   "\"fraction_of_cublas\": %.3f, \"floor_ms\": %.3f, \"ratio_to_floor\": %.3f}", i ? "," : "",
                   static_cast<long long>(r.L), r.ms, r.flops, r.tflops, r.tflops / gemm, floor_ms, r.ms / floor_ms);
    }
    std::fprintf(f, "\n], \"copy_gbps\": %.1f, \"decode\": [", copy_gbps);
    for (size_t i = 0; i < decode.size(); ++i) {
      const DecodeResult& r = decode[i];
      std::fprintf(f, "%s\n  {\"T\": 1, \"L\": %lld, \"median_ms\": %.5f, \"key_gbps\": %.1f, "
                   "\"fraction_of_copy\": %.3f}", i ? "," : "", static_cast<long long>(r.L), r.ms, r.gbps,
                   r.gbps / copy_gbps);
    }
    std::fprintf(f, "\n]}\n");
    std::fclose(f);
  }
  CUDA_CHECK(cudaFree(p.workspace));
  CUDA_CHECK(cudaFree(q));
  CUDA_CHECK(cudaFree(k));
  CUDA_CHECK(cudaFree(w));
  CUDA_CHECK(cudaFree(out_idx));
  CUDA_CHECK(cudaFree(out_sc));
  return 0;
}

}  // namespace
}  // namespace indexcache

int main(int argc, char** argv) { return indexcache::Main(argc, argv); }
