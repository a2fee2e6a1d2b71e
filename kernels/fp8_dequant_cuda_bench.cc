// Fp8DequantCuda at DeepSeek-V3.2's FP8 matrix shapes. The kernel is bandwidth-bound (1 byte
// read and 2 written per element, plus the scales), so its bar is the device-to-device copy
// measured in the same run. Beside it, what just-in-time dequantisation costs the GEMM it feeds:
// the same weight's cuBLAS bf16 GEMM (as CudaBackend::Linear runs it) for an 8192-token prefill
// chunk and for one decode token, both measured here too.
//
//   fp8_dequant_cuda_bench [--json PATH]
//
// Prints a markdown table; with --json also writes the numbers to PATH. Exits 0 with
// "no CUDA device" where there is none, so CI can run it.
#include <cublas_v2.h>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <string>
#include <vector>

#include "core/cuda_check.h"
#include "kernels/bench_util.h"
#include "kernels/fp8_dequant_cuda.h"

namespace indexcache {
namespace {

constexpr int kWarmup = 5;
constexpr int kIters = 50;
constexpr int64_t kPrefillTokens = 8192;

struct Shape2 {
  const char* name;
  int64_t rows, cols;
};

struct Result {
  std::string name;
  int64_t rows, cols;
  double us, bytes, gemm_prefill_us, gemm_decode_us;
};

// y[M, N] = x[M, K] w[N, K]^T in bf16 with fp32 compute, exactly as CudaBackend::Linear calls it.
double GemmUs(cublasHandle_t handle, const __nv_bfloat16* w, const __nv_bfloat16* x, __nv_bfloat16* y, int64_t M,
              int64_t N, int64_t K) {
  const float alpha = 1.f, beta = 0.f;
  return MedianMs(
             [&] {
               CUBLAS_CHECK(cublasGemmEx(handle, CUBLAS_OP_T, CUBLAS_OP_N, static_cast<int>(N), static_cast<int>(M),
                                         static_cast<int>(K), &alpha, w, CUDA_R_16BF, static_cast<int>(K), x,
                                         CUDA_R_16BF, static_cast<int>(K), &beta, y, CUDA_R_16BF, static_cast<int>(N),
                                         CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
             },
             kWarmup, kIters) *
         1e3;
}

Result Bench(cublasHandle_t handle, const Shape2& s, const __nv_bfloat16* x, __nv_bfloat16* y) {
  Fp8BlockLayout layout;
  layout.rows = s.rows;
  layout.cols = s.cols;
  const size_t n = static_cast<size_t>(s.rows) * s.cols, scales = layout.scale_rows() * layout.scale_cols();
  uint8_t* q = DeviceAlloc<uint8_t>(n);
  float* scale = DeviceAlloc<float>(scales);
  __nv_bfloat16* out = DeviceAlloc<__nv_bfloat16>(n);
  CUDA_CHECK(cudaMemset(q, 0x38, n));  // e4m3 0x38 = 1.0
  CUDA_CHECK(cudaMemset(scale, 0, scales * sizeof(float)));
  Result r;
  r.name = s.name;
  r.rows = s.rows;
  r.cols = s.cols;
  r.us = MedianMs([&] { Fp8DequantCuda(q, scale, layout, out, nullptr); }, kWarmup, kIters) * 1e3;
  r.bytes = 3.0 * n + 4.0 * scales;
  r.gemm_prefill_us = GemmUs(handle, out, x, y, kPrefillTokens, s.rows, s.cols);
  r.gemm_decode_us = GemmUs(handle, out, x, y, 1, s.rows, s.cols);
  CUDA_CHECK(cudaFree(q));
  CUDA_CHECK(cudaFree(scale));
  CUDA_CHECK(cudaFree(out));
  return r;
}

int Main(int argc, char** argv) {
  const char* json_path = nullptr;
  if (!ParseJsonFlag(argc, argv, &json_path)) return 1;
  cudaDeviceProp prop;
  if (!BenchDeviceProps(&prop)) return 0;
  const double copy = MeasureCopyGbps(size_t{1} << 30);  // 1 GiB
  // DeepSeek-V3.2 (hidden 7168, q_lora 1536, kv_lora 512, 128 heads, dense MLP 18432, experts
  // 2048); the last row has a width that is no multiple of 16 and shows the scalar path.
  const std::vector<Shape2> shapes = {
      {"q_a_proj", 1536, 7168},          {"q_b_proj", 24576, 1536},      {"kv_a_proj_with_mqa", 576, 7168},
      {"kv_b_proj", 32768, 512},         {"o_proj", 7168, 16384},        {"dense gate/up_proj", 18432, 7168},
      {"dense down_proj", 7168, 18432},  {"expert gate/up_proj", 2048, 7168}, {"expert down_proj", 7168, 2048},
      {"odd width (scalar path)", 2048, 7160},
  };
  int64_t max_cols = 0, max_rows = 0;
  for (const Shape2& s : shapes) {
    max_cols = std::max(max_cols, s.cols);
    max_rows = std::max(max_rows, s.rows);
  }
  __nv_bfloat16* x = NewRandomBf16(static_cast<size_t>(kPrefillTokens) * max_cols, 1);
  __nv_bfloat16* y = DeviceAlloc<__nv_bfloat16>(static_cast<size_t>(kPrefillTokens) * max_rows);
  cublasHandle_t handle;
  CUBLAS_CHECK(cublasCreate(&handle));
  std::vector<Result> results;
  for (const Shape2& s : shapes) results.push_back(Bench(handle, s, x, y));
  CUBLAS_CHECK(cublasDestroy(handle));
  CUDA_CHECK(cudaFree(x));
  CUDA_CHECK(cudaFree(y));

  std::printf("Fp8DequantCuda (e4m3 + fp32 128x128 block scales -> bf16) on %s; device copy %.0f GB/s "
              "(1 GiB D2D, read+write)\n\n", prop.name, copy);
  std::printf("| matrix | rows x cols | median us | MB moved | GB/s | of copy | bf16 GEMM us, %lld tokens | "
              "dequant / GEMM | GEMM us, 1 token | dequant / GEMM |\n",
              static_cast<long long>(kPrefillTokens));
  std::printf("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|\n");
  for (const Result& r : results) {
    const double gbps = r.bytes / (r.us * 1e3);
    std::printf("| %s | %lld x %lld | %.1f | %.1f | %.0f | %.0f%% | %.1f | %.1f%% | %.1f | %.0f%% |\n", r.name.c_str(),
                static_cast<long long>(r.rows), static_cast<long long>(r.cols), r.us, r.bytes / 1e6, gbps,
                100 * gbps / copy, r.gemm_prefill_us, 100 * r.us / r.gemm_prefill_us, r.gemm_decode_us,
                100 * r.us / r.gemm_decode_us);
  }
  if (json_path) {
    FILE* f = OpenJsonFile(json_path);
    if (!f) return 1;
    std::fprintf(f, "{\"device\": \"%s\", \"copy_gbps\": %.1f, \"prefill_tokens\": %lld, \"results\": [", prop.name,
                 copy, static_cast<long long>(kPrefillTokens));
    for (size_t i = 0; i < results.size(); ++i) {
      const Result& r = results[i];
      std::fprintf(f,
                   "%s\n  {\"matrix\": \"%s\", \"rows\": %lld, \"cols\": %lld, \"median_us\": %.2f, \"bytes\": %.0f, "
                   "\"gemm_prefill_us\": %.2f, \"gemm_decode_us\": %.2f}",
                   i ? "," : "", r.name.c_str(), static_cast<long long>(r.rows), static_cast<long long>(r.cols), r.us,
                   r.bytes, r.gemm_prefill_us, r.gemm_decode_us);
    }
    std::fprintf(f, "\n]}\n");
    std::fclose(f);
  }
  return 0;
}

}  // namespace
}  // namespace indexcache

int main(int argc, char** argv) { return indexcache::Main(argc, argv); }
