// IndexerTopkCuda with FP8 inputs against the bf16 path at DeepSeek-V3.2 prefill sizes: H = 64,
// D = 128, topk = 2048, 2048 queries at the end of contexts of L = 8K, 32K, 128K keys
// (query_offset = L - 2048, causal). Ceilings measured in the same run: a cuBLASLt FP8 GEMM
// (e4m3, 8192^3) and a cuBLAS bf16 GEMM (8192^3).
//
// Rows per L (FLOPs = 2 * T * L_eff * H * D, L_eff the causal average of visible keys; floors =
// FLOPs / the measured GEMM rate):
//  - bf16:        the bf16 path (bf16 q, k);
//  - fp8:         the FP8 path (q, k quantised once beforehand with Fp8QuantRowsCuda);
//  - no-sel:      the path with all head weights 0 -- every score is 0, so after the first
//                 compaction no key passes the threshold: the cost of the e4m3 logits and their
//                 epilogue without the selection (its difference to "fp8" is the selection);
//  - the quantisation of q (T * H rows) and of k (L rows), timed apart.
// Selection quality: |topk_fp8 ∩ topk_bf16| / topk per query, mean and minimum over the 2048 queries,
// on (a) random gaussian q and k, (b) "structured" q and k: per token a random mix of 3 shared
// directions (coefficients N(0, 2^2)) plus N(0, 0.5^2) noise, and two outlier channels x 6, so that
// most of a score comes from a few dominant directions and the per-row fp8 scales are set by the
// outliers (a harder case for per-row quantisation than i.i.d. data).
//
//   indexer_topk_fp8_cuda_bench [--json PATH] [--profile] [--kernels 0,2,...] [--kernel N]
//
// --profile: only two FP8 calls at L = 32K (gaussian data) and no ceilings, for a profiler; with
// --kernel N they run FP8 main-kernel variant N (SetIndexerTopkFp8Experiment).
// --kernels: the FP8 main-kernel variants timed side by side (default: all). Per variant and L:
// the whole call, no-sel, the main kernel alone (skip_finalize) and the whole call with
// final_compact, and whether the output equals variant 0's bit for bit (indices and scores; where
// not, the mean / min per-query overlap of the index sets).
// Variant 0 (the first of the table, v3) is timed again last (the run's noise).
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <vector>

#include "core/cuda_check.h"
#include "core/dtype.h"
#include "kernels/bench_util.h"
#include "kernels/fp8_quant_cuda.h"
#include "kernels/indexer_topk_cuda.h"

namespace indexcache {
namespace {

constexpr int64_t T = 2048, H = 64, D = 128, kTopk = 2048;

struct VariantTimes {
  int variant;
  double fp8_ms, nosel_ms, main_ms, fc_ms;  // fc: the whole call with final_compact
  bool equal, fc_equal;  // output bitwise equal to variant 0's (without, with final_compact)
  double overlap_mean, overlap_min;  // |set ∩ variant 0's set| / topk where not equal
};

struct Row {
  int64_t L;
  double flops, bf16_ms, bf16_nosel_ms, fp8_ms, nosel_ms, kquant_ms;
  double overlap_gauss_mean, overlap_gauss_min, overlap_struct_mean, overlap_struct_min;
  std::vector<VariantTimes> variants;
};

using Normal = RandomNormalStream;  // kernels/bench_util.h

uint16_t ToBf16(float v) { return FloatToBf16(v); }

// rows x D structured values (see the header): 3 shared directions, noise, 2 outlier channels.
void FillStructured(uint16_t* dst, int64_t rows, uint64_t seed) {
  Normal dir(12345), rng(seed);
  std::vector<float> u(3 * D);
  for (float& v : u) v = dir.Next() / std::sqrt(static_cast<float>(D)) * 4.f;
  std::vector<uint16_t> block(static_cast<size_t>(std::min<int64_t>(rows, 8192) * D));
  for (int64_t r0 = 0; r0 < rows; r0 += 8192) {
    const int64_t n = std::min<int64_t>(8192, rows - r0);
    for (int64_t r = 0; r < n; ++r) {
      const float c0 = 2.f * rng.Next(), c1 = 2.f * rng.Next(), c2 = 2.f * rng.Next();
      for (int64_t d = 0; d < D; ++d) {
        float v = 0.5f * rng.Next() + c0 * u[d] + c1 * u[D + d] + c2 * u[2 * D + d];
        if (d == 3 || d == 64) v *= 6.f;
        block[r * D + d] = ToBf16(v);
      }
    }
    CUDA_CHECK(cudaMemcpy(dst + r0 * D, block.data(), n * D * 2, cudaMemcpyHostToDevice));
  }
}

// Mean and minimum over rows of |a ∩ b| / topk (indices >= 0 only).
void Overlap(const std::vector<int32_t>& a, const std::vector<int32_t>& b, int64_t L, double* mean, double* mn) {
  std::vector<int32_t> stamp(L, -1);
  double sum = 0.0, lo = 1.0;
  for (int64_t t = 0; t < T; ++t) {
    for (int64_t j = 0; j < kTopk; ++j) {
      if (a[t * kTopk + j] >= 0) stamp[a[t * kTopk + j]] = static_cast<int32_t>(t);
    }
    int64_t both = 0;
    for (int64_t j = 0; j < kTopk; ++j) {
      const int32_t s = b[t * kTopk + j];
      if (s >= 0 && stamp[s] == t) ++both;
    }
    const double f = static_cast<double>(both) / kTopk;
    sum += f;
    lo = std::min(lo, f);
  }
  *mean = sum / T;
  *mn = lo;
}

int Main(int argc, char** argv) {
  const char* json_path = nullptr;
  bool profile = false;
  int profile_kernel = -1;
  std::vector<int> kernels;
  std::vector<char*> rest = {argv[0]};
  for (int i = 1; i < argc; ++i) {
    if (std::strcmp(argv[i], "--kernel") == 0 && i + 1 < argc) {
      profile_kernel = std::atoi(argv[++i]);
    } else if (std::strcmp(argv[i], "--kernels") == 0 && i + 1 < argc) {
      for (const char* c = argv[++i]; *c;) {
        kernels.push_back(std::atoi(c));
        while (*c && *c != ',') ++c;
        if (*c == ',') ++c;
      }
    } else {
      rest.push_back(argv[i]);
    }
  }
  if (kernels.empty()) {
    for (int v = 0; v < IndexerTopkFp8KernelCount(); ++v) kernels.push_back(v);
  }
  if (!ParseJsonFlag(static_cast<int>(rest.size()), rest.data(), &json_path, "--profile", &profile)) return 1;
  cudaDeviceProp prop;
  if (!BenchDeviceProps(&prop)) return 0;
  const double fp8_gemm = profile ? 0.0 : MeasureFp8GemmTflops(8192);
  const double bf16_gemm = profile ? 0.0 : MeasureBf16GemmTflops(8192);

  const std::vector<int64_t> lengths = {8192, 32768, 131072};
  const int64_t max_l = lengths.back();
  uint16_t *q = DeviceAlloc<uint16_t>(T * H * D), *k = DeviceAlloc<uint16_t>(max_l * D);
  uint8_t *q8 = DeviceAlloc<uint8_t>(T * H * D), *k8 = DeviceAlloc<uint8_t>(max_l * D);
  float *qs = DeviceAlloc<float>(T * H), *ks = DeviceAlloc<float>(max_l);
  float *w = DeviceAlloc<float>(T * H), *w0 = DeviceAlloc<float>(T * H);
  int32_t* idx_bf16 = DeviceAlloc<int32_t>(T * kTopk);
  int32_t* idx_fp8 = DeviceAlloc<int32_t>(T * kTopk);
  float* out_sc = DeviceAlloc<float>(T * kTopk);
  {
    std::vector<float> hw(T * H);
    uint64_t s = 77;
    for (float& v : hw) {
      s = s * 6364136223846793005ull + 1442695040888963407ull;
      v = static_cast<float>((s >> 40) & 0xffffff) / static_cast<float>(1 << 24) / 8.f;  // U(0,1) * 64^-0.5
    }
    CUDA_CHECK(cudaMemcpy(w, hw.data(), hw.size() * sizeof(float), cudaMemcpyHostToDevice));
    CUDA_CHECK(cudaMemset(w0, 0, T * H * sizeof(float)));
  }

  IndexerTopkCudaParams pb;
  pb.q = reinterpret_cast<const __nv_bfloat16*>(q);
  pb.k = reinterpret_cast<const __nv_bfloat16*>(k);
  pb.weights = w;
  pb.T = T;
  pb.H = H;
  pb.D = D;
  pb.topk = kTopk;
  pb.scale = 1.f / std::sqrt(static_cast<float>(D));
  pb.out_indices = idx_bf16;
  pb.out_scores = out_sc;
  pb.L = max_l;
  pb.query_offset = max_l - T;
  IndexerTopkCudaParams pf = pb;
  pf.q = nullptr;
  pf.k = nullptr;
  pf.q_fp8 = q8;
  pf.q_scale = qs;
  pf.k_fp8 = k8;
  pf.k_scale = ks;
  pf.out_indices = idx_fp8;
  // One workspace for both (the FP8 path's candidate buffers are the longer ones).
  pb.workspace_bytes = pf.workspace_bytes = std::max(IndexerTopkCudaWorkspaceBytes(pb), IndexerTopkCudaWorkspaceBytes(pf));
  pb.workspace = pf.workspace = DeviceAlloc<uint8_t>(pb.workspace_bytes);

  auto quantise = [&](int64_t L) {
    Fp8QuantRowsCuda(reinterpret_cast<const __nv_bfloat16*>(q), T * H, D, q8, qs, nullptr);
    Fp8QuantRowsCuda(reinterpret_cast<const __nv_bfloat16*>(k), L, D, k8, ks, nullptr);
  };
  auto overlap_at = [&](int64_t L, double* mean, double* mn) {
    pb.L = pf.L = L;
    pb.query_offset = pf.query_offset = L - T;
    quantise(L);
    IndexerTopkCuda(pb);
    IndexerTopkCuda(pf);
    CUDA_CHECK(cudaDeviceSynchronize());
    std::vector<int32_t> a(T * kTopk), b(T * kTopk);
    CUDA_CHECK(cudaMemcpy(a.data(), idx_bf16, a.size() * 4, cudaMemcpyDeviceToHost));
    CUDA_CHECK(cudaMemcpy(b.data(), idx_fp8, b.size() * 4, cudaMemcpyDeviceToHost));
    Overlap(a, b, L, mean, mn);
  };

  // Gaussian data: timings and overlap.
  FillRandomBf16(q, T * H * D, 1);
  FillRandomBf16(k, max_l * D, 100);
  if (profile) {
    pf.L = 32768;
    pf.query_offset = pf.L - T;
    quantise(pf.L);
    IndexerTopkFp8Experiment e;
    e.fp8_kernel = profile_kernel;
    SetIndexerTopkFp8Experiment(e);
    for (int i = 0; i < 2; ++i) IndexerTopkCuda(pf);
    CUDA_CHECK(cudaDeviceSynchronize());
    std::printf("profile: 2 FP8 calls at L = %lld done\n", static_cast<long long>(pf.L));
    return 0;
  }
  std::vector<Row> rows;
  const double qquant_ms = MedianMs([&] {
    Fp8QuantRowsCuda(reinterpret_cast<const __nv_bfloat16*>(q), T * H, D, q8, qs, nullptr);
  }, 3, 21);
  for (const int64_t L : lengths) {
    Row r{};
    r.L = L;
    const double l_eff = static_cast<double>(L - T) + (T + 1) / 2.0;
    r.flops = 2.0 * T * l_eff * H * D;
    pb.L = pf.L = L;
    pb.query_offset = pf.query_offset = L - T;
    r.kquant_ms = MedianMs([&] {
      Fp8QuantRowsCuda(reinterpret_cast<const __nv_bfloat16*>(k), L, D, k8, ks, nullptr);
    }, 3, 21);
    quantise(L);
    const int iters = L >= 131072 ? 9 : 21;
    r.bf16_ms = MedianMs([&] { IndexerTopkCuda(pb); }, 2, iters);
    r.fp8_ms = MedianMs([&] { IndexerTopkCuda(pf); }, 2, iters);
    pf.weights = pb.weights = w0;
    r.nosel_ms = MedianMs([&] { IndexerTopkCuda(pf); }, 2, iters);
    r.bf16_nosel_ms = MedianMs([&] { IndexerTopkCuda(pb); }, 2, iters);
    pf.weights = pb.weights = w;
    // The FP8 main-kernel variants, side by side; variant 0 again at the end.
    std::vector<int32_t> ref_idx(T * kTopk), got_idx(T * kTopk);
    std::vector<float> ref_sc(T * kTopk), got_sc(T * kTopk);
    std::vector<int> order = kernels;
    order.push_back(0);
    auto run_copy = [&](int variant, std::vector<int32_t>* idx, std::vector<float>* sc, bool fc = false) {
      IndexerTopkFp8Experiment e;
      e.fp8_kernel = variant;
      e.final_compact = fc;
      SetIndexerTopkFp8Experiment(e);
      IndexerTopkCuda(pf);
      CUDA_CHECK(cudaDeviceSynchronize());
      CUDA_CHECK(cudaMemcpy(idx->data(), idx_fp8, idx->size() * 4, cudaMemcpyDeviceToHost));
      CUDA_CHECK(cudaMemcpy(sc->data(), out_sc, sc->size() * 4, cudaMemcpyDeviceToHost));
    };
    run_copy(0, &ref_idx, &ref_sc);
    for (size_t vi = 0; vi < order.size(); ++vi) {
      VariantTimes vt{};
      vt.variant = order[vi];
      run_copy(vt.variant, &got_idx, &got_sc);
      IndexerTopkFp8Experiment e;
      e.fp8_kernel = vt.variant;
      vt.equal = got_idx == ref_idx && std::memcmp(got_sc.data(), ref_sc.data(), got_sc.size() * 4) == 0;
      if (!vt.equal) Overlap(ref_idx, got_idx, L, &vt.overlap_mean, &vt.overlap_min);
      vt.fp8_ms = MedianMs([&] { IndexerTopkCuda(pf); }, 2, iters);
      pf.weights = w0;
      vt.nosel_ms = MedianMs([&] { IndexerTopkCuda(pf); }, 2, iters);
      pf.weights = w;
      e.skip_finalize = true;
      SetIndexerTopkFp8Experiment(e);
      vt.main_ms = MedianMs([&] { IndexerTopkCuda(pf); }, 2, iters);
      run_copy(vt.variant, &got_idx, &got_sc, true);
      vt.fc_equal = got_idx == ref_idx && std::memcmp(got_sc.data(), ref_sc.data(), got_sc.size() * 4) == 0;
      vt.fc_ms = MedianMs([&] { IndexerTopkCuda(pf); }, 2, iters);
      r.variants.push_back(vt);
    }
    SetIndexerTopkFp8Experiment({});
    overlap_at(L, &r.overlap_gauss_mean, &r.overlap_gauss_min);
    rows.push_back(r);
  }
  // Structured data: overlap only (the kernels' time does not depend on the values much).
  FillStructured(q, T * H, 3);
  FillStructured(k, max_l, 4);
  for (Row& r : rows) overlap_at(r.L, &r.overlap_struct_mean, &r.overlap_struct_min);

  std::printf("IndexerTopkCuda bf16 vs FP8 on %s: T=%lld H=%lld D=%lld topk=%lld, causal, query_offset = L - T\n",
              prop.name, static_cast<long long>(T), static_cast<long long>(H), static_cast<long long>(D),
              static_cast<long long>(kTopk));
  std::printf("cuBLASLt FP8 GEMM 8192^3: %.0f TFLOP/s; cuBLAS bf16 GEMM 8192^3: %.0f TFLOP/s (floors = FLOPs / these)\n",
              fp8_gemm, bf16_gemm);
  std::printf("quantise q (%lld rows of %lld): %.1f us\n\n", static_cast<long long>(T * H), static_cast<long long>(D),
              qquant_ms * 1e3);
  std::printf("| L | path | median ms | TFLOP/s | x fp8 floor | x bf16 floor |\n|---:|---|---:|---:|---:|---:|\n");
  for (const Row& r : rows) {
    const double f8 = r.flops / (fp8_gemm * 1e9), b16 = r.flops / (bf16_gemm * 1e9);
    auto line = [&](const char* name, double ms) {
      std::printf("| %lld | %s | %.3f | %.0f | %.2f | %.2f |\n", static_cast<long long>(r.L), name, ms,
                  r.flops / (ms * 1e9), ms / f8, ms / b16);
    };
    line("bf16", r.bf16_ms);
    line("bf16 no-sel (weights 0)", r.bf16_nosel_ms);
    line("fp8", r.fp8_ms);
    line("fp8 no-sel (weights 0)", r.nosel_ms);
    std::printf("| %lld | quantise k (%lld rows) | %.3f | | | |\n", static_cast<long long>(r.L),
                static_cast<long long>(r.L), r.kquant_ms);
  }
  std::printf("\nFP8 main-kernel variants (default %d): whole call, no-sel, main kernel alone (no finalize); "
              "'same' = output bitwise equal to variant 0's\n\n", IndexerTopkFp8DefaultKernel());
  std::printf("| L | variant | fp8 ms | x fp8 floor | no-sel ms | x fp8 floor | main only ms | x fp8 floor | same | "
              "fp8 final_compact ms | x fp8 floor | same |\n"
              "|---:|---|---:|---:|---:|---:|---:|---:|---|---:|---:|---|\n");
  for (const Row& r : rows) {
    const double f8 = r.flops / (fp8_gemm * 1e9);
    for (size_t i = 0; i < r.variants.size(); ++i) {
      const VariantTimes& v = r.variants[i];
      char same[64];
      if (v.equal) {
        std::snprintf(same, sizeof(same), "yes");
      } else {
        std::snprintf(same, sizeof(same), "no: sets %.4f / %.4f", v.overlap_mean, v.overlap_min);
      }
      std::printf("| %lld | %d %s%s | %.3f | %.2f | %.3f | %.2f | %.3f | %.2f | %s | %.3f | %.2f | %s |\n",
                  static_cast<long long>(r.L), v.variant, IndexerTopkFp8KernelName(v.variant),
                  i + 1 == r.variants.size() ? " (again)" : "", v.fp8_ms, v.fp8_ms / f8, v.nosel_ms, v.nosel_ms / f8,
                  v.main_ms, v.main_ms / f8, same, v.fc_ms, v.fc_ms / f8, v.fc_equal ? "yes" : "no");
    }
  }
  std::printf("\nSelection overlap |fp8 ∩ bf16| / topk over the %lld queries (mean / min)\n\n", static_cast<long long>(T));
  std::printf("| L | gaussian mean | gaussian min | structured mean | structured min |\n|---:|---:|---:|---:|---:|\n");
  for (const Row& r : rows) {
    std::printf("| %lld | %.4f | %.4f | %.4f | %.4f |\n", static_cast<long long>(r.L), r.overlap_gauss_mean,
                r.overlap_gauss_min, r.overlap_struct_mean, r.overlap_struct_min);
  }
  if (json_path != nullptr) {
    FILE* f = OpenJsonFile(json_path);
    if (f == nullptr) return 1;
    std::fprintf(f, "{\"device\": \"%s\", \"cublaslt_fp8_tflops\": %.1f, \"cublas_bf16_tflops\": %.1f, "
                 "\"q_quant_ms\": %.4f, \"rows\": [", prop.name, fp8_gemm, bf16_gemm, qquant_ms);
    for (size_t i = 0; i < rows.size(); ++i) {
      const Row& r = rows[i];
      std::fprintf(f, "%s\n  {\"L\": %lld, \"flops\": %.4g, \"bf16_ms\": %.4f, \"fp8_ms\": %.4f, "
                   "\"fp8_nosel_ms\": %.4f, \"bf16_nosel_ms\": %.4f, \"k_quant_ms\": %.4f, \"overlap_gauss_mean\": %.4f, "
                   "\"overlap_gauss_min\": %.4f, \"overlap_struct_mean\": %.4f, \"overlap_struct_min\": %.4f}",
                   i ? "," : "", static_cast<long long>(r.L), r.flops, r.bf16_ms, r.fp8_ms, r.nosel_ms, r.bf16_nosel_ms, r.kquant_ms,
                   r.overlap_gauss_mean, r.overlap_gauss_min, r.overlap_struct_mean, r.overlap_struct_min);
    }
    std::fprintf(f, "\n]}\n");
    std::fclose(f);
  }
  return 0;  // process exit frees the device buffers
}

}  // namespace
}  // namespace indexcache

int main(int argc, char** argv) { return indexcache::Main(argc, argv); }
