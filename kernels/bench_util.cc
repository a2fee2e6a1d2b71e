#include "kernels/bench_util.h"

#include <algorithm>
#include <cstring>

#include <cublasLt.h>
#include <cublas_v2.h>

#include "core/dtype.h"

namespace indexcache {
namespace {

// RandomNormalStream's values rounded to bf16 (nearest even), as bits.
class RandomBf16Stream {
 public:
  explicit RandomBf16Stream(uint64_t seed) : normal_(seed) {}
  uint16_t Next() { return FloatToBf16(normal_.Next()); }

 private:
  RandomNormalStream normal_;
};

}  // namespace

double MedianMs(const std::function<void()>& fn, int warmup, int iters, cudaStream_t stream) {
  for (int i = 0; i < warmup; ++i) fn();
  CUDA_CHECK(cudaDeviceSynchronize());
  cudaEvent_t start, stop;
  CUDA_CHECK(cudaEventCreate(&start));
  CUDA_CHECK(cudaEventCreate(&stop));
  std::vector<double> ms(iters);
  for (double& t : ms) {
    CUDA_CHECK(cudaEventRecord(start, stream));
    fn();
    CUDA_CHECK(cudaEventRecord(stop, stream));
    CUDA_CHECK(cudaEventSynchronize(stop));
    float v = 0.f;
    CUDA_CHECK(cudaEventElapsedTime(&v, start, stop));
    t = v;
  }
  CUDA_CHECK(cudaEventDestroy(start));
  CUDA_CHECK(cudaEventDestroy(stop));
  std::nth_element(ms.begin(), ms.begin() + iters / 2, ms.end());
  return ms[iters / 2];
}

double MeasureBf16GemmTflops(int n) {
  const size_t elems = static_cast<size_t>(n) * n;
  __nv_bfloat16* a = NewRandomBf16(elems, 11);
  __nv_bfloat16* b = NewRandomBf16(elems, 12);
  __nv_bfloat16* c = DeviceAlloc<__nv_bfloat16>(elems);
  cublasHandle_t handle;
  CUBLAS_CHECK(cublasCreate(&handle));
  const float alpha = 1.f, beta = 0.f;
  const double ms = MedianMs(
      [&] {
        CUBLAS_CHECK(cublasGemmEx(handle, CUBLAS_OP_N, CUBLAS_OP_N, n, n, n, &alpha, a, CUDA_R_16BF, n, b, CUDA_R_16BF,
                                  n, &beta, c, CUDA_R_16BF, n, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
      },
      3, 20);
  CUBLAS_CHECK(cublasDestroy(handle));
  CUDA_CHECK(cudaFree(a));
  CUDA_CHECK(cudaFree(b));
  CUDA_CHECK(cudaFree(c));
  return 2.0 * n * static_cast<double>(n) * n / (ms * 1e9);
}

double MeasureFp8GemmTflops(int n) {
  const size_t elems = static_cast<size_t>(n) * n;
  // Random e4m3 codes of magnitude < 2 (bit 6 clear: exponent <= 7, never the NaN code 0x7f).
  std::vector<uint8_t> host(elems);
  uint64_t s = 0x9E3779B97F4A7C15ull;
  for (uint8_t& b : host) {
    s ^= s << 13;
    s ^= s >> 7;
    s ^= s << 17;
    b = static_cast<uint8_t>(s >> 32) & 0xbf;
  }
  uint8_t* a = DeviceAlloc<uint8_t>(elems);
  uint8_t* b = DeviceAlloc<uint8_t>(elems);
  CUDA_CHECK(cudaMemcpy(a, host.data(), elems, cudaMemcpyHostToDevice));
  CUDA_CHECK(cudaMemcpy(b, host.data(), elems, cudaMemcpyHostToDevice));
  __nv_bfloat16* c = DeviceAlloc<__nv_bfloat16>(elems);
  constexpr size_t kWorkspace = size_t{32} << 20;
  void* workspace = DeviceAlloc<uint8_t>(kWorkspace);
  cublasLtHandle_t lt;
  CUBLAS_CHECK(cublasLtCreate(&lt));
  cublasLtMatmulDesc_t op;
  CUBLAS_CHECK(cublasLtMatmulDescCreate(&op, CUBLAS_COMPUTE_32F, CUDA_R_32F));
  // FP8 matmuls need the "TN" layout: A transposed, B not (both K-contiguous).
  const cublasOperation_t ta = CUBLAS_OP_T, tb = CUBLAS_OP_N;
  CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(op, CUBLASLT_MATMUL_DESC_TRANSA, &ta, sizeof(ta)));
  CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(op, CUBLASLT_MATMUL_DESC_TRANSB, &tb, sizeof(tb)));
  cublasLtMatrixLayout_t la, lb, lc;
  CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&la, CUDA_R_8F_E4M3, n, n, n));
  CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&lb, CUDA_R_8F_E4M3, n, n, n));
  CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&lc, CUDA_R_16BF, n, n, n));
  cublasLtMatmulPreference_t pref;
  CUBLAS_CHECK(cublasLtMatmulPreferenceCreate(&pref));
  CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &kWorkspace,
                                                    sizeof(kWorkspace)));
  cublasLtMatmulHeuristicResult_t heur;
  int found = 0;
  CUBLAS_CHECK(cublasLtMatmulAlgoGetHeuristic(lt, op, la, lb, lc, lc, pref, 1, &heur, &found));
  double tflops = 0.0;
  if (found > 0) {
    const float alpha = 1.f, beta = 0.f;
    const double ms = MedianMs(
        [&] {
          CUBLAS_CHECK(cublasLtMatmul(lt, op, &alpha, a, la, b, lb, &beta, c, lc, c, lc, &heur.algo, workspace,
                                      kWorkspace, nullptr));
        },
        3, 20);
    tflops = 2.0 * n * static_cast<double>(n) * n / (ms * 1e9);
  }
  CUBLAS_CHECK(cublasLtMatmulPreferenceDestroy(pref));
  CUBLAS_CHECK(cublasLtMatrixLayoutDestroy(la));
  CUBLAS_CHECK(cublasLtMatrixLayoutDestroy(lb));
  CUBLAS_CHECK(cublasLtMatrixLayoutDestroy(lc));
  CUBLAS_CHECK(cublasLtMatmulDescDestroy(op));
  CUBLAS_CHECK(cublasLtDestroy(lt));
  CUDA_CHECK(cudaFree(a));
  CUDA_CHECK(cudaFree(b));
  CUDA_CHECK(cudaFree(c));
  CUDA_CHECK(cudaFree(workspace));
  return tflops;
}

double MeasureCopyGbps(size_t bytes) {
  char* src = DeviceAlloc<char>(bytes);
  char* dst = DeviceAlloc<char>(bytes);
  CUDA_CHECK(cudaMemset(src, 0, bytes));
  const double ms = MedianMs([&] { CUDA_CHECK(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToDevice)); }, 5, 50);
  CUDA_CHECK(cudaFree(src));
  CUDA_CHECK(cudaFree(dst));
  return 2.0 * static_cast<double>(bytes) / (ms * 1e6);
}

std::vector<uint16_t> RandomBf16Bits(size_t n, uint64_t seed) {
  RandomBf16Stream stream(seed);
  std::vector<uint16_t> out(n);
  for (uint16_t& v : out) v = stream.Next();
  return out;
}

void FillRandomBf16(void* dst, size_t n, uint64_t seed) {
  RandomBf16Stream stream(seed);
  std::vector<uint16_t> block(std::min(n, size_t{1} << 20));
  for (size_t off = 0; off < n; off += block.size()) {
    const size_t len = std::min(block.size(), n - off);
    for (size_t i = 0; i < len; ++i) block[i] = stream.Next();
    CUDA_CHECK(cudaMemcpy(static_cast<uint16_t*>(dst) + off, block.data(), len * sizeof(uint16_t),
                          cudaMemcpyHostToDevice));
  }
}

__nv_bfloat16* NewRandomBf16(size_t n, uint64_t seed) {
  __nv_bfloat16* d = DeviceAlloc<__nv_bfloat16>(n);
  FillRandomBf16(d, n, seed);
  return d;
}

bool ParseJsonFlag(int argc, char** argv, const char** json_path, const char* switch_name, bool* switch_value) {
  for (int i = 1; i < argc; ++i) {
    if (std::strcmp(argv[i], "--json") == 0 && i + 1 < argc) {
      *json_path = argv[++i];
    } else if (switch_name != nullptr && std::strcmp(argv[i], switch_name) == 0) {
      *switch_value = true;
    } else {
      if (switch_name != nullptr) {
        std::fprintf(stderr, "usage: %s [--json PATH] [%s]\n", argv[0], switch_name);
      } else {
        std::fprintf(stderr, "usage: %s [--json PATH]\n", argv[0]);
      }
      return false;
    }
  }
  return true;
}

bool ParseJsonFlag(int argc, char** argv, const char** json_path) {
  return ParseJsonFlag(argc, argv, json_path, nullptr, nullptr);
}

bool BenchDeviceProps(cudaDeviceProp* prop) {
  if (!CudaDeviceAvailable()) {
    std::printf("no CUDA device\n");
    return false;
  }
  CUDA_CHECK(cudaGetDeviceProperties(prop, 0));
  return true;
}

FILE* OpenJsonFile(const char* path) {
  FILE* f = std::fopen(path, "w");
  if (f == nullptr) std::fprintf(stderr, "cannot write %s\n", path);
  return f;
}

}  // namespace indexcache
