// CUDA_CHECK / CUBLAS_CHECK: abort with file:line, the error's name and text, and the failing
// expression. CUDA errors are bugs or broken devices, not user input, so they abort rather than
// return a Status (see core/status.h).
//
// CUBLAS_CHECK expands to cublasGetStatusName/String at the use site: include <cublas_v2.h> and
// depend on @cuda//:cublas there, so that cudart-only code does not pull in cuBLAS.
#pragma once

#include <cstdio>
#include <cstdlib>

#include <cuda_runtime.h>  // not _api.h: the typed cudaMalloc(T**) overloads live here

namespace indexcache {

// This process's MPI rank, or -1 outside MPI. Set once at start-up; error lines then begin with
// "[rank N] " so the failing rank is visible in interleaved output.
inline int g_rank = -1;

[[noreturn]] inline void CudaFail(const char* file, int line, const char* lib, const char* name,
                                  const char* text, const char* expr) {
  if (g_rank >= 0) std::fprintf(stderr, "[rank %d] ", g_rank);
  std::fprintf(stderr, "%s:%d: %s error %s: %s in %s\n", file, line, lib, name, text, expr);
  std::fflush(stderr);
  std::abort();
}

// True when a CUDA device can be used. Never aborts: without a driver (CI) cudaGetDeviceCount
// fails, and that means "no device", so GPU tests skip and tools say so.
inline bool CudaDeviceAvailable() {
  int count = 0;
  const cudaError_t err = cudaGetDeviceCount(&count);
  if (err != cudaSuccess) {
    cudaGetLastError();  // clear the error so a later CUDA_CHECK does not report it
    return false;
  }
  return count > 0;
}

}  // namespace indexcache

#define CUDA_CHECK(expr)                                                                        \
  do {                                                                                          \
    const cudaError_t _ic_err = (expr);                                                         \
    if (_ic_err != cudaSuccess) {                                                               \
      ::indexcache::CudaFail(__FILE__, __LINE__, "CUDA", cudaGetErrorName(_ic_err),             \
                             cudaGetErrorString(_ic_err), #expr);                               \
    }                                                                                           \
  } while (0)

#define CUBLAS_CHECK(expr)                                                                      \
  do {                                                                                          \
    const cublasStatus_t _ic_st = (expr);                                                       \
    if (_ic_st != CUBLAS_STATUS_SUCCESS) {                                                      \
      ::indexcache::CudaFail(__FILE__, __LINE__, "cuBLAS", cublasGetStatusName(_ic_st),         \
                             cublasGetStatusString(_ic_st), #expr);                             \
    }                                                                                           \
  } while (0)
