// SparseMlaCuda throughput at DeepSeek-V3.2 prefill shapes (H = 128, d_qk = 576, d_v = 512,
// topk = 2048, T = 4096 queries, random valid indices into L = 8K / 32K / 128K latents; plus one
// GLM-5 row with H = 64), against a bf16 GEMM ceiling measured in the same run with cuBLAS; and
// the decode shape: T = 64 / 128 queries (one per request), each with its own 2048 keys of its own
// 32K context (a pool of T x 32K latents, as batched decode lays them out). Every row for both
// kernels (SparseMlaVariant).
//
//   sparse_mla_cuda_bench [--json PATH] [--sweep]
//
// The decode shapes also run over an FP8 latent pool (kernels/latent_fp8.h rows, 656 bytes): the
// kernel reading the cache in place (ws_fp8_cache, SparseMlaCudaParams::kv_fp8) and the unfused path
// it replaces (fp8_gather_then_ws: DequantizeLatentRowsCuda of the selected rows, then the kernel on
// them; the index compaction is precomputed and not timed), and ws_fp8_cache_polling (the FP8
// loader variant WsExperiment::fp8_polling). "KV GB/s" stays the bf16 figure there.
//
// --sweep adds rows of the warp-specialised kernel at other settings (kernels/sparse_mla_cuda_internal.h):
// ws_kv_normal_policy (gathers without the L2 evict-last policy), ws_prefetchN (L2 prefetch N pairs
// ahead) and ws_no_gathers (the loader copies nothing: the consumers' ceiling; wrong results by
// design).
//
// FLOPs are counted as FlashMLA counts them: 2 * H * (d_qk + d_v) * topk per query. "KV GB/s" is
// the logical gather, T * topk * d_qk * 2 bytes (each query's latents once); the kernel gathers
// them once per 64-head group (twice at H = 128), mostly from L2. Prints a markdown table; with
// --json also writes the numbers to PATH. Exits 0 with "no CUDA device" where there is none.
#include <cstdint>
#include <cstdio>
#include <string>
#include <vector>

#include "core/cuda_check.h"
#include "kernels/bench_util.h"
#include "kernels/latent_fp8.h"
#include "kernels/latent_fp8_cuda.h"
#include "kernels/sparse_mla_cuda.h"
#include "kernels/sparse_mla_cuda_internal.h"

namespace indexcache {
namespace {

constexpr int kWarmup = 3;
constexpr int kIters = 15;

struct Result {
  std::string variant;
  const char* shape;  // "prefill" or "decode"
  int64_t T, H, L;    // L: the context each query selects from
  double ms, tflops, kv_gbps;
};

struct Shape {
  const char* name;
  int64_t T, H, L;  // decode: each query t selects from its own rows [t L, (t + 1) L)
  bool per_query_context;
};

int Main(int argc, char** argv) {
  const char* json_path = nullptr;
  bool sweep = false;
  if (!ParseJsonFlag(argc, argv, &json_path, "--sweep", &sweep)) return 1;
  cudaDeviceProp prop;
  if (!BenchDeviceProps(&prop)) return 0;

  constexpr int64_t T = 4096, kHMax = 128, kDqk = 576, kDv = 512, kTopk = 2048, kLMax = 128 * 1024;
  constexpr int64_t kDecodeTMax = 128, kDecodeL = 32 * 1024, kPoolRows = kDecodeTMax * kDecodeL;  // 4M rows
  const size_t nq = T * kHMax * kDqk, nkv = kPoolRows * kDqk, nout = T * kHMax * kDv;
  __nv_bfloat16 *q, *kv, *out;
  float* lse;
  int32_t* idx;
  CUDA_CHECK(cudaMalloc(&q, nq * 2));
  CUDA_CHECK(cudaMalloc(&kv, nkv * 2));
  CUDA_CHECK(cudaMalloc(&out, nout * 2));
  CUDA_CHECK(cudaMalloc(&lse, T * kHMax * sizeof(float)));
  CUDA_CHECK(cudaMalloc(&idx, T * kTopk * sizeof(int32_t)));
  FillRandomBf16(q, nq, 1);
  // 128K random latents, repeated over the decode pool (4.8 GB; the values do not matter for speed).
  FillRandomBf16(kv, kLMax * kDqk, 2);
  for (int64_t r = kLMax; r < kPoolRows; r += kLMax) {
    CUDA_CHECK(cudaMemcpy(kv + r * kDqk, kv, kLMax * kDqk * 2, cudaMemcpyDeviceToDevice));
  }

  // The FP8 pool: the first 128K rows quantised, repeated like the bf16 pool (2.75 GB).
  const LatentFp8Layout fp8_layout = MakeLatentFp8Layout(kDv, kDqk - kDv).value();
  const int64_t fp8_row = fp8_layout.row_bytes();
  uint8_t* kv8;
  CUDA_CHECK(cudaMalloc(&kv8, kPoolRows * fp8_row));
  {
    std::vector<int32_t> rows(kLMax);
    for (int64_t r = 0; r < kLMax; ++r) rows[r] = static_cast<int32_t>(r);
    int32_t* drows;
    CUDA_CHECK(cudaMalloc(&drows, kLMax * sizeof(int32_t)));
    CUDA_CHECK(cudaMemcpy(drows, rows.data(), kLMax * sizeof(int32_t), cudaMemcpyHostToDevice));
    QuantizeLatentRowsCuda(kv, drows, kLMax, fp8_layout, kv8, nullptr);
    CUDA_CHECK(cudaDeviceSynchronize());
    CUDA_CHECK(cudaFree(drows));
    for (int64_t r = kLMax; r < kPoolRows; r += kLMax) {
      CUDA_CHECK(cudaMemcpy(kv8 + r * fp8_row, kv8, kLMax * fp8_row, cudaMemcpyDeviceToDevice));
    }
  }
  // The unfused path's gathered rows and compacted indices (decode shapes only).
  __nv_bfloat16* gathered;
  int32_t* compact;
  CUDA_CHECK(cudaMalloc(&gathered, kDecodeTMax * kTopk * kDqk * 2));
  CUDA_CHECK(cudaMalloc(&compact, kDecodeTMax * kTopk * sizeof(int32_t)));

  // cuBLAS bf16 GEMM ceiling: 8192^3.
  const double gemm_tflops = MeasureBf16GemmTflops(8192);

  std::vector<Result> results;
  std::vector<int32_t> hidx(T * kTopk);
  const std::vector<Shape> shapes = {{"prefill", T, 128, 8 * 1024, false},  {"prefill", T, 128, 32 * 1024, false},
                                     {"prefill", T, 128, 128 * 1024, false}, {"prefill", T, 64, 32 * 1024, false},
                                     {"decode", 64, 128, kDecodeL, true},    {"decode", 128, 128, kDecodeL, true}};
  for (const Shape& sh : shapes) {
    uint64_t x = 12345;
    for (int64_t t = 0; t < sh.T; ++t) {
      for (int64_t j = 0; j < kTopk; ++j) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        const int64_t key = static_cast<int64_t>((x >> 20) % static_cast<uint64_t>(sh.L));
        hidx[t * kTopk + j] = static_cast<int32_t>(sh.per_query_context ? t * sh.L + key : key);
      }
    }
    CUDA_CHECK(cudaMemcpy(idx, hidx.data(), sh.T * kTopk * sizeof(int32_t), cudaMemcpyHostToDevice));
    struct Config {
      std::string name;
      SparseMlaVariant variant;
      sparse_mla::WsExperiment experiment;
    };
    std::vector<Config> configs = {{"two_warpgroups", SparseMlaVariant::kTwoWarpgroups, {}},
                                   {"warp_specialized", SparseMlaVariant::kWarpSpecialized, {}}};
    if (sweep) {
      sparse_mla::WsExperiment e;
      e.kv_evict_last = false;
      configs.push_back({"ws_kv_normal_policy", SparseMlaVariant::kWarpSpecialized, e});
    }
    if (sweep && std::string(sh.name) == "prefill" && sh.H == 128) {
      for (int pf : {1, 2, 4}) {
        sparse_mla::WsExperiment e;
        e.prefetch_pairs = pf;
        configs.push_back({"ws_prefetch" + std::to_string(pf), SparseMlaVariant::kWarpSpecialized, e});
      }
      sparse_mla::WsExperiment e;
      e.skip_gathers = true;
      configs.push_back({"ws_no_gathers", SparseMlaVariant::kWarpSpecialized, e});
    }
    for (const Config& cfg : configs) {
      sparse_mla::SetWsExperiment(cfg.experiment);
      SparseMlaCudaParams p;
      p.q = q;
      p.kv = kv;
      p.indices = idx;
      p.T = sh.T;
      p.H = sh.H;
      p.d_qk = kDqk;
      p.d_v = kDv;
      p.L = sh.per_query_context ? sh.T * sh.L : sh.L;
      p.topk = kTopk;
      p.scale = 1.f / 13.856406f;  // 1/sqrt(192)
      p.out = out;
      p.lse = lse;
      p.variant = cfg.variant;
      const double ms = MedianMs([&] { SparseMlaCuda(p, nullptr); }, kWarmup, kIters);
      const double flops = 2.0 * sh.H * (kDqk + kDv) * kTopk * sh.T;
      const double kv_bytes = double(sh.T) * kTopk * kDqk * 2;
      results.push_back({cfg.name, sh.name, sh.T, sh.H, sh.L, ms, flops / (ms * 1e9), kv_bytes / (ms * 1e6)});
    }
    sparse_mla::SetWsExperiment({});
    if (sh.per_query_context) {  // the FP8 cache, fused and unfused
      SparseMlaCudaParams p;
      p.q = q;
      p.kv_fp8 = kv8;
      p.indices = idx;
      p.T = sh.T;
      p.H = sh.H;
      p.L = sh.T * sh.L;
      p.topk = kTopk;
      p.scale = 1.f / 13.856406f;
      p.out = out;
      p.lse = lse;
      const double flops = 2.0 * sh.H * (kDqk + kDv) * kTopk * sh.T;
      const double kv_bytes = double(sh.T) * kTopk * kDqk * 2;
      double ms = MedianMs([&] { SparseMlaCuda(p, nullptr); }, kWarmup, kIters);
      results.push_back({"ws_fp8_cache", sh.name, sh.T, sh.H, sh.L, ms, flops / (ms * 1e9), kv_bytes / (ms * 1e6)});
      {  // the polling loader (WsExperiment::fp8_polling)
        sparse_mla::WsExperiment e;
        e.fp8_polling = true;
        sparse_mla::SetWsExperiment(e);
        ms = MedianMs([&] { SparseMlaCuda(p, nullptr); }, kWarmup, kIters);
        sparse_mla::SetWsExperiment({});
        results.push_back(
            {"ws_fp8_cache_polling", sh.name, sh.T, sh.H, sh.L, ms, flops / (ms * 1e9), kv_bytes / (ms * 1e6)});
      }
      std::vector<int32_t> hcompact(sh.T * kTopk);
      for (int64_t i = 0; i < sh.T * kTopk; ++i) hcompact[i] = static_cast<int32_t>(i);  // every index is valid
      CUDA_CHECK(cudaMemcpy(compact, hcompact.data(), hcompact.size() * sizeof(int32_t), cudaMemcpyHostToDevice));
      SparseMlaCudaParams u = p;
      u.kv_fp8 = nullptr;
      u.kv = gathered;
      u.indices = compact;
      u.L = sh.T * kTopk;
      ms = MedianMs(
          [&] {
            DequantizeLatentRowsCuda(kv8, idx, sh.T * kTopk, fp8_layout, gathered, nullptr);
            SparseMlaCuda(u, nullptr);
          },
          kWarmup, kIters);
      results.push_back(
          {"fp8_gather_then_ws", sh.name, sh.T, sh.H, sh.L, ms, flops / (ms * 1e9), kv_bytes / (ms * 1e6)});
    }
  }

  std::printf("SparseMlaCuda bf16 on %s (%d SMs); topk=%lld, d_qk=%lld, d_v=%lld, median of %d\n", prop.name,
              prop.multiProcessorCount, static_cast<long long>(kTopk), static_cast<long long>(kDqk),
              static_cast<long long>(kDv), kIters);
  std::printf("cuBLAS bf16 GEMM 8192^3: %.0f TFLOP/s\n\n", gemm_tflops);
  std::printf("| kernel | shape | T | H | L | median ms | TFLOP/s | of GEMM | KV GB/s (logical) |\n"
              "|---|---|---:|---:|---:|---:|---:|---:|---:|\n");
  for (const Result& r : results) {
    std::printf("| %s | %s | %lld | %lld | %lldK | %.3f | %.0f | %.0f%% | %.0f |\n", r.variant.c_str(), r.shape,
                static_cast<long long>(r.T), static_cast<long long>(r.H), static_cast<long long>(r.L / 1024), r.ms,
                r.tflops, 100.0 * r.tflops / gemm_tflops, r.kv_gbps);
  }

  if (json_path != nullptr) {
    FILE* f = OpenJsonFile(json_path);
    if (f == nullptr) return 1;
    std::fprintf(f, "{\"device\": \"%s\", \"gemm_bf16_tflops\": %.1f, \"iters\": %d, \"topk\": %lld, "
                 "\"sparse_mla_bf16\": [", prop.name, gemm_tflops, kIters, static_cast<long long>(kTopk));
    for (size_t i = 0; i < results.size(); ++i) {
      const Result& r = results[i];
      std::fprintf(f, "%s\n  {\"kernel\": \"%s\", \"shape\": \"%s\", \"T\": %lld, \"H\": %lld, \"L\": %lld, "
                   "\"median_ms\": %.4f, \"tflops\": %.1f, \"fraction_of_gemm\": %.3f, \"kv_gbps_logical\": %.1f}",
                   i ? "," : "", r.variant.c_str(), r.shape, static_cast<long long>(r.T), static_cast<long long>(r.H),
                   static_cast<long long>(r.L), r.ms, r.tflops, r.tflops / gemm_tflops, r.kv_gbps);
    }
    std::fprintf(f, "\n]}\n");
    std::fclose(f);
  }
  CUDA_CHECK(cudaFree(q));
  CUDA_CHECK(cudaFree(kv));
  CUDA_CHECK(cudaFree(out));
  CUDA_CHECK(cudaFree(lse));
  CUDA_CHECK(cudaFree(idx));
  CUDA_CHECK(cudaFree(kv8));
  CUDA_CHECK(cudaFree(gathered));
  CUDA_CHECK(cudaFree(compact));
  return 0;
}

}  // namespace
}  // namespace indexcache

int main(int argc, char** argv) { return indexcache::Main(argc, argv); }
