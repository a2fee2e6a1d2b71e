// Shared helpers of the CUDA benchmark programs (the *_cuda_bench binaries and `indexcache bench`):
// CUDA-event timing with medians, the ceilings measured in the same run (a cuBLAS bf16 GEMM, a
// cuBLASLt FP8 GEMM and a device-to-device copy), deterministic random bf16 inputs, `--json PATH`
// argument parsing, the "no CUDA device" skip and opening the JSON output.
//
// Timing follows docs/benchmarks.md: warm-up runs, a device sync, then a pair of CUDA events
// around each timed run; the median is reported. Errors abort through CUDA_CHECK / CUBLAS_CHECK.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <functional>
#include <vector>

#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include "core/cuda_check.h"

namespace indexcache {

// Median milliseconds of `iters` timed runs of fn(): `warmup` untimed runs, a device sync, then
// each run bracketed by its own pair of events recorded on `stream` (fn should launch its work
// there). iters >= 1.
double MedianMs(const std::function<void()>& fn, int warmup, int iters, cudaStream_t stream = nullptr);

// TFLOP/s of a cuBLAS bf16 GEMM, n x n x n with fp32 compute (cublasGemmEx, random inputs),
// counting 2 * n^3 FLOPs; the median of 20 runs after 3 warm-up runs.
double MeasureBf16GemmTflops(int n = 8192);

// TFLOP/s of a cuBLASLt FP8 GEMM, n x n x n: e4m3 x e4m3 ("TN", both K-contiguous) -> bf16 with
// fp32 compute (random codes), counting 2 * n^3 FLOPs; the median of 20 runs after 3 warm-up runs,
// with the first algorithm of cuBLASLt's heuristic and a 32 MiB workspace. 0 where cuBLASLt offers
// no FP8 algorithm (a GPU without FP8 tensor cores).
double MeasureFp8GemmTflops(int n = 8192);

// GB/s of a device-to-device cudaMemcpyAsync of `bytes`, counted as read + write (2 x bytes); the
// median of 50 runs after 5 warm-up runs.
double MeasureCopyGbps(size_t bytes);

// xorshift64 stream of roughly N(0, 1) floats (a sum of four uniforms, rescaled): deterministic
// benchmark data, fast enough for gigabytes. The same seed gives the same values.
class RandomNormalStream {
 public:
  explicit RandomNormalStream(uint64_t seed) : s_(seed * 0x9E3779B97F4A7C15ull + 1) {
    if (s_ == 0) s_ = 1;  // xorshift's one fixed point
  }
  float Next() {
    float sum = 0.f;
    for (int r = 0; r < 4; ++r) {
      s_ ^= s_ << 13;
      s_ ^= s_ >> 7;
      s_ ^= s_ << 17;
      sum += static_cast<float>(s_ >> 40) / static_cast<float>(1 << 24);
    }
    return (sum - 2.f) * 1.7320508f;
  }

 private:
  uint64_t s_;
};

// n deterministic pseudo-random bf16 values (as bits), roughly N(0, 1): a sum of four uniforms,
// rescaled, rounded to nearest even. The same seed gives the same values.
std::vector<uint16_t> RandomBf16Bits(size_t n, uint64_t seed);

// Writes RandomBf16Bits(n, seed) to the device buffer `dst` (n bf16), through a bounded host
// buffer: every element is drawn, none repeats a block.
void FillRandomBf16(void* dst, size_t n, uint64_t seed);

// cudaMalloc of n elements of T; free with cudaFree.
template <typename T>
T* DeviceAlloc(size_t n) {
  T* p = nullptr;
  CUDA_CHECK(cudaMalloc(&p, n * sizeof(T)));
  return p;
}

// A new device buffer of n random bf16 (FillRandomBf16); free with cudaFree.
__nv_bfloat16* NewRandomBf16(size_t n, uint64_t seed);

// Accepts only `--json PATH` (any number of times, the last wins) and sets *json_path to PATH
// (left alone without one). Otherwise prints "usage: <prog> [--json PATH]" to stderr and returns
// false.
bool ParseJsonFlag(int argc, char** argv, const char** json_path);

// The same, also accepting the switch `switch_name` (e.g. "--quick"), which sets *switch_value to
// true; the usage line then reads "usage: <prog> [--json PATH] [<switch_name>]".
bool ParseJsonFlag(int argc, char** argv, const char** json_path, const char* switch_name, bool* switch_value);

// Device 0's properties in *prop. Where no CUDA device is usable, prints "no CUDA device" to stdout
// and returns false: the programs then exit 0, so CI can run them.
bool BenchDeviceProps(cudaDeviceProp* prop);

// std::fopen(path, "w"); where that fails, prints "cannot write PATH" to stderr and returns nullptr.
FILE* OpenJsonFile(const char* path);

}  // namespace indexcache
