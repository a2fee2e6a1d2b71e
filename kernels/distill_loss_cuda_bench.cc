// DistillLossCuda (forward + backward, fused) at DeepSeek-V3.2 sizes: HI 64, D 128, HA 128,
// DA 576; one Full layer serving 1 or 4 layers; dense (causal) and sparse (top-2048); 8K and 32K
// tokens (Tq = L, query_offset 0).
//
//   distill_loss_cuda_bench [--json PATH] [--quick]    (--quick: 8K only)
//   distill_loss_cuda_bench --profile                  (one call each, for a profiler)
//
// Every case runs with the wgmma teacher (the default on sm_90) and, at 8K, with the mma.sync
// teacher too (the previous path, for before/after in one run); the student is the default
// (warp-keys at these sizes), and at 8K the wgmma case also runs with the tiled student (the
// previous student, for before/after in one run: column "student"); each wgmma case is also timed
// "teacher only" (no loss or gradient outputs: the student phase is skipped), which gives the
// teacher phase's own rate (FLOPs = pairs * served * 2 * 2*HA*DA) and, by difference, the
// student's. The cuBLAS bf16 GEMM ceiling is measured in the same run.
//
// Reports the median of kIters timed calls after one warm-up (fewer for multi-second cases),
// queries per second and TFLOP/s with
//   FLOPs = pairs * (served * 2 sweeps * 2*HA*DA  +  4 * 2*HI*D)
// where pairs = sum over queries of the key-set size (dense: T(T+1)/2; sparse: T*K for T >= K
// rows, fewer for early rows) and the 4 student products are I (sweep A), I again (sweep B),
// grad_q and grad_k. Inputs are constant bytes (timing does not depend on values).
// Prints "no CUDA device" and exits 0 without a GPU.
#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <string>
#include <utility>
#include <vector>

#include "core/cuda_check.h"
#include "kernels/bench_util.h"
#include "kernels/distill_loss_cuda.h"

namespace indexcache {
namespace {

struct Result {
  std::string mode, impl, student;
  int64_t T, served, K;
  double ms, pairs, flops;
  int iters;
  double teacher_ms = 0, teacher_flops = 0;  // wgmma: the teacher-only run
};

// profile: instead of timing medians, one call each of the full kernel, the teacher only and the
// full kernel without grad_k (for a profiler; the times printed are single runs).
Result Bench(int64_t T, int served, bool sparse, int64_t K, DistillTeacherImpl impl,
             DistillStudentImpl student = DistillStudentImpl::kAuto, bool profile = false) {
  const int64_t HI = 64, D = 128, HA = 128, DA = 576;
  std::vector<void*> allocs;
  auto alloc = [&](size_t bytes, int byte) {
    void* ptr = nullptr;
    CUDA_CHECK(cudaMalloc(&ptr, bytes));
    CUDA_CHECK(cudaMemset(ptr, byte, bytes));
    allocs.push_back(ptr);
    return ptr;
  };
  DistillLossCudaParams p;
  // 0x3c3c ~ 0.0115 in bf16.
  p.q = static_cast<const __nv_bfloat16*>(alloc(T * HI * D * 2, 0x3c));
  p.k = static_cast<const __nv_bfloat16*>(alloc(T * D * 2, 0x3c));
  p.w = static_cast<const float*>(alloc(T * HI * 4, 0x3c));
  p.Tq = p.L = T;
  p.HI = HI;
  p.D = D;
  p.index_scale = 0.088f;
  p.num_served = served;
  for (int j = 0; j < served; ++j) {
    p.attn_q[j] = static_cast<const __nv_bfloat16*>(alloc(T * HA * DA * 2, 0x3c));
    p.attn_kv[j] = static_cast<const __nv_bfloat16*>(alloc(T * DA * 2, 0x3c));
  }
  p.HA = HA;
  p.DA = DA;
  p.attn_scale = 0.0417f;
  double pairs = 0;
  if (sparse) {
    // Row t: keys t, t-1, ..., t-K+1 (clipped at 0): min(t+1, K) distinct valid keys.
    std::vector<int32_t> topk(T * K);
    for (int64_t t = 0; t < T; ++t) {
      for (int64_t j = 0; j < K; ++j) topk[t * K + j] = static_cast<int32_t>(t - j >= 0 ? t - j : -1);
      pairs += static_cast<double>(std::min<int64_t>(t + 1, K));
    }
    int32_t* d = static_cast<int32_t*>(alloc(topk.size() * 4, 0));
    CUDA_CHECK(cudaMemcpy(d, topk.data(), topk.size() * 4, cudaMemcpyHostToDevice));
    p.sparse = true;
    p.topk = d;
    p.K = K;
  } else {
    pairs = 0.5 * static_cast<double>(T) * static_cast<double>(T + 1);
  }
  p.loss = static_cast<double*>(alloc(8, 0));
  p.grad_q = static_cast<float*>(alloc(T * HI * D * 4, 0));
  p.grad_k = static_cast<float*>(alloc(T * D * 4, 0));
  p.grad_w = static_cast<float*>(alloc(T * HI * 4, 0));
  p.teacher_impl = impl;
  p.student_impl = student;
  p.workspace_bytes = DistillLossCudaWorkspaceBytes(p);
  p.workspace = alloc(p.workspace_bytes, 0);

  // One timed warm-up run picks the number of timed runs (fewer for multi-second cases).
  const auto run = [&] { DistillLossCuda(p); };
  if (profile) {
    const double full = MedianMs(run, 0, 1);
    const DistillLossCudaParams all = p;
    p.loss = nullptr;
    p.grad_q = p.grad_k = p.grad_w = nullptr;
    const double teacher = MedianMs(run, 0, 1);
    p = all;
    p.grad_k = nullptr;
    const double no_gk = MedianMs(run, 0, 1);
    std::printf("profile T=%lld served=%d %s: full %.2f ms, teacher only %.2f ms, without grad_k %.2f ms\n",
                (long long)T, served, sparse ? "sparse" : "dense", full, teacher, no_gk);
    for (void* ptr : allocs) CUDA_CHECK(cudaFree(ptr));
    return {};
  }
  const double warm = MedianMs(run, 0, 1);
  const int iters = warm > 3000 ? 1 : (warm > 500 ? 3 : 7);
  const double median_ms = MedianMs(run, 0, iters);
  Result r{sparse ? "sparse" : "dense", impl == DistillTeacherImpl::kWgmma ? "wgmma" : "mma.sync",
           student == DistillStudentImpl::kTiled ? "tiled" : "auto", T, served,
           sparse ? K : 0, median_ms, pairs, pairs * (served * 2.0 * 2.0 * HA * DA + 4.0 * 2.0 * HI * D), iters};
  if (impl == DistillTeacherImpl::kWgmma && student != DistillStudentImpl::kTiled) {
    // Teacher only: without outputs the kernel skips the student phase.
    p.loss = nullptr;
    p.grad_q = p.grad_k = p.grad_w = nullptr;
    r.teacher_ms = MedianMs(run, 1, iters);
    r.teacher_flops = pairs * served * 2.0 * 2.0 * HA * DA;
  }
  for (void* ptr : allocs) CUDA_CHECK(cudaFree(ptr));
  return r;
}

int Main(int argc, char** argv) {
  const char* json_path = nullptr;
  bool quick = false;
  if (argc == 2 && std::string(argv[1]) == "--profile") {
    cudaDeviceProp prop;
    if (!BenchDeviceProps(&prop)) return 0;
    Bench(4096, 1, false, 0, DistillTeacherImpl::kWgmma, DistillStudentImpl::kAuto, true);
    return 0;
  }
  if (!ParseJsonFlag(argc, argv, &json_path, "--quick", &quick)) return 1;
  cudaDeviceProp prop;
  if (!BenchDeviceProps(&prop)) return 0;
  const bool sm90 = prop.major == 9 && prop.minor == 0;
  std::vector<Result> results;
  for (int64_t T : {int64_t{8192}, int64_t{32768}}) {
    for (int served : {1, 4}) {
      for (bool sparse : {true, false}) {
        if (quick && T > 8192) continue;
        std::vector<std::pair<DistillTeacherImpl, DistillStudentImpl>> impls;
        if (sm90) impls.push_back({DistillTeacherImpl::kWgmma, DistillStudentImpl::kAuto});
        if (sm90 && T == 8192) impls.push_back({DistillTeacherImpl::kWgmma, DistillStudentImpl::kTiled});
        if (T == 8192 || !sm90) impls.push_back({DistillTeacherImpl::kMmaSync, DistillStudentImpl::kAuto});
        for (const auto& impl : impls) {
          results.push_back(Bench(T, served, sparse, sparse ? 2048 : 0, impl.first, impl.second));
          const Result& r = results.back();
          std::fprintf(stderr, "done %s %s %s T=%lld served=%lld: %.2f ms\n", r.mode.c_str(), r.impl.c_str(),
                       r.student.c_str(), (long long)r.T, (long long)r.served, r.ms);
        }
      }
    }
  }
  const double gemm = MeasureBf16GemmTflops(8192);
  std::printf("DistillLossCuda fwd+bwd on %s (HI 64, D 128, HA 128, DA 576); cuBLAS bf16 GEMM 8192^3 in the same "
              "run: %.1f TFLOP/s\n\n", prop.name, gemm);
  std::printf("| mode | teacher | student | T | served | K | median ms | queries/s | TFLOP/s | teacher-only ms | teacher TFLOP/s "
              "| student ms (difference) | runs |\n"
              "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n");
  for (const Result& r : results) {
    std::printf("| %s | %s | %s | %lld | %lld | %lld | %.2f | %.3g | %.1f |", r.mode.c_str(), r.impl.c_str(),
                r.student.c_str(), (long long)r.T,
                (long long)r.served, (long long)r.K, r.ms, r.T / (r.ms * 1e-3), r.flops / (r.ms * 1e9));
    if (r.teacher_ms > 0) {
      std::printf(" %.2f | %.1f | %.2f |", r.teacher_ms, r.teacher_flops / (r.teacher_ms * 1e9), r.ms - r.teacher_ms);
    } else {
      std::printf(" - | - | - |");
    }
    std::printf(" %d |\n", r.iters);
  }
  if (json_path != nullptr) {
    FILE* f = OpenJsonFile(json_path);
    if (f == nullptr) return 1;
    std::fprintf(f, "{\"device\": \"%s\", \"gemm_tflops\": %.2f, \"flops_formula\": \"pairs*(served*2*2*HA*DA + "
                 "4*2*HI*D)\", \"results\": [", prop.name, gemm);
    for (size_t i = 0; i < results.size(); ++i) {
      const Result& r = results[i];
      std::fprintf(f, "%s\n  {\"mode\": \"%s\", \"teacher\": \"%s\", \"student\": \"%s\", \"teacher_only_ms\": %.3f, \"T\": %lld, \"served\": %lld, \"K\": %lld, \"median_ms\": %.3f, "
                   "\"queries_per_s\": %.1f, \"pairs\": %.0f, \"tflops\": %.2f, \"runs\": %d}", i ? "," : "",
                   r.mode.c_str(), r.impl.c_str(), r.student.c_str(), r.teacher_ms, (long long)r.T, (long long)r.served, (long long)r.K, r.ms, r.T / (r.ms * 1e-3),
                   r.pairs, r.flops / (r.ms * 1e9), r.iters);
    }
    std::fprintf(f, "\n]}\n");
    std::fclose(f);
  }
  return 0;
}

}  // namespace
}  // namespace indexcache

int main(int argc, char** argv) { return indexcache::Main(argc, argv); }
