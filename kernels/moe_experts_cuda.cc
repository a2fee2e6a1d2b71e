#include "kernels/moe_experts_cuda.h"

#include <cstdio>
#include <cstdlib>

#include "core/cuda_check.h"
#include "kernels/elementwise_cuda.h"
#include "kernels/fp8_dequant_cuda.h"

namespace indexcache {

namespace {

using bf16 = __nv_bfloat16;

// One grouped GEMM: for each problem p, C_p[M_p rows of tokens, N] = B_p[tokens, K] A_p[N, K]^T in
// row-major terms, i.e. column-major C^T = op_T(A) B^T (the layout CudaBackend::Linear uses).
// `a`, `b`, `c` are the device pointer arrays, `host_a` ... the same pointers on the host;
// `tokens` the problems' row counts. Should a cuBLAS build refuse the grouped call for these
// types (CUBLAS_STATUS_NOT_SUPPORTED), or when `try_grouped` is false, the same products run as
// one cublasGemmEx each and the function returns false, so the caller can report which path ran.
bool GroupedLinear(cublasHandle_t handle, bool try_grouped, const std::vector<int>& tokens, int N, int K,
                   const void* const* a, const void* const* b, void* const* c, const void* const* host_a,
                   const void* const* host_b, const void* const* host_c) {
  const int count = static_cast<int>(tokens.size());
  if (!try_grouped) {
    const float alpha = 1.0f, beta = 0.0f;
    for (int p = 0; p < count; ++p) {
      CUBLAS_CHECK(cublasGemmEx(handle, CUBLAS_OP_T, CUBLAS_OP_N, N, tokens[p], K, &alpha, host_a[p], CUDA_R_16BF, K,
                                host_b[p], CUDA_R_16BF, K, &beta, const_cast<void*>(host_c[p]), CUDA_R_16BF, N,
                                CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
    }
    return false;
  }
  const std::vector<cublasOperation_t> ta(count, CUBLAS_OP_T), tb(count, CUBLAS_OP_N);
  const std::vector<int> m(count, N), k(count, K), lda(count, K), ldb(count, K), ldc(count, N), size(count, 1);
  const std::vector<float> alpha(count, 1.0f), beta(count, 0.0f);
  const cublasStatus_t status = cublasGemmGroupedBatchedEx(
      handle, ta.data(), tb.data(), m.data(), tokens.data(), k.data(), alpha.data(), a, CUDA_R_16BF, lda.data(), b,
      CUDA_R_16BF, ldb.data(), beta.data(), c, CUDA_R_16BF, ldc.data(), count, size.data(), CUBLAS_COMPUTE_32F);
  if (status != CUBLAS_STATUS_NOT_SUPPORTED) {
    CUBLAS_CHECK(status);
    return true;
  }
  for (int p = 0; p < count; ++p) {
    CUBLAS_CHECK(cublasGemmEx(handle, CUBLAS_OP_T, CUBLAS_OP_N, N, tokens[p], K, &alpha[p], host_a[p], CUDA_R_16BF, K,
                              host_b[p], CUDA_R_16BF, K, &beta[p], const_cast<void*>(host_c[p]), CUDA_R_16BF, N,
                              CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
  }
  return false;
}

// The bf16 operand of one matrix: the weight itself, or its dequantisation into *cursor.
const void* Operand(const ExpertMatrixCuda& w, bf16** cursor, cudaStream_t stream) {
  if (!w.fp8()) return w.values;
  Fp8BlockLayout layout;
  layout.rows = w.rows;
  layout.cols = w.cols;
  layout.block_rows = w.block_rows;
  layout.block_cols = w.block_cols;
  bf16* dst = *cursor;
  Fp8DequantCuda(static_cast<const uint8_t*>(w.values), w.scale_inv, layout, dst, stream);
  *cursor += w.rows * w.cols;
  return dst;
}

}  // namespace

size_t MoeExpertsCudaPointerBytes(int64_t E) { return static_cast<size_t>(9 * E) * sizeof(void*); }

int64_t MoeExpertScratchElements(const ExpertCuda& e) {
  return e.gate.scratch_elements() + e.up.scratch_elements() + e.down.scratch_elements();
}

MoeExpertsCudaRun MoeExpertMlpsCuda(cublasHandle_t handle, const MoeExpertsCudaArgs& args, cudaStream_t stream) {
  MoeExpertsCudaRun run;
  const int64_t E = static_cast<int64_t>(args.experts.size());
  if (E == 0 || static_cast<int64_t>(args.offsets.size()) != E + 1) {
    std::fprintf(stderr, "MoeExpertMlpsCuda: %lld experts with %zu offsets\n", static_cast<long long>(E),
                 args.offsets.size());
    std::abort();
  }
  const int64_t H = args.experts[0].gate.cols, I = args.experts[0].gate.rows;
  CUBLAS_CHECK(cublasSetStream(handle, stream));
  // Plan the batches on the host first, so that all pointer arrays go up in one copy: batch b
  // covers active experts [begin[b], begin[b + 1]) of `active` and its dequantised matrices are
  // laid out from the start of the scratch.
  std::vector<int64_t> active;
  for (int64_t e = 0; e < E; ++e) {
    if (args.offsets[e + 1] > args.offsets[e]) active.push_back(e);
  }
  if (active.empty()) return run;
  std::vector<size_t> begin = {0};
  int64_t used = 0;
  for (size_t i = 0; i < active.size(); ++i) {
    const int64_t need = MoeExpertScratchElements(args.experts[active[i]]);
    if (need > args.dequant_elements) {
      std::fprintf(stderr, "MoeExpertMlpsCuda: an expert needs %lld scratch elements, %lld given\n",
                   static_cast<long long>(need), static_cast<long long>(args.dequant_elements));
      std::abort();
    }
    if (used + need > args.dequant_elements && i > begin.back()) {
      begin.push_back(i);
      used = 0;
    }
    used += need;
  }
  begin.push_back(active.size());
  // Pointer arrays, [3 GEMMs][A, B, C][active]: A the weights (or their scratch slots), B the
  // inputs, C the outputs, each at the expert's first row.
  const size_t n_active = active.size();
  std::vector<const void*> host(9 * n_active);
  auto at = [&](int gemm, int operand, size_t i) -> const void*& { return host[(gemm * 3 + operand) * n_active + i]; };
  for (size_t b = 0; b + 1 < begin.size(); ++b) {
    bf16* slot = args.dequant;
    for (size_t i = begin[b]; i < begin[b + 1]; ++i) {
      const ExpertCuda& w = args.experts[active[i]];
      const int64_t row0 = args.offsets[active[i]];
      // Scratch slots are assigned here in the same order the dequantisation below fills them.
      auto slot_of = [&](const ExpertMatrixCuda& m) -> const void* {
        if (!m.fp8()) return m.values;
        const void* p = slot;
        slot += m.rows * m.cols;
        return p;
      };
      at(0, 0, i) = slot_of(w.gate);
      at(1, 0, i) = slot_of(w.up);
      at(2, 0, i) = slot_of(w.down);
      at(0, 1, i) = at(1, 1, i) = args.x + row0 * H;
      at(0, 2, i) = args.gate + row0 * I;
      at(1, 2, i) = args.up + row0 * I;
      at(2, 1, i) = args.gate + row0 * I;
      at(2, 2, i) = args.out + row0 * H;
    }
  }
  // From pageable memory the copy is staged before this call returns, so `host` may go away.
  if (args.grouped_gemm) CUDA_CHECK(cudaMemcpyAsync(args.pointers, host.data(), host.size() * sizeof(void*), cudaMemcpyHostToDevice,
                             stream));
  const void* const* dev = static_cast<const void* const*>(args.pointers);
  auto dev_at = [&](int gemm, int operand, size_t i) { return dev + (gemm * 3 + operand) * n_active + i; };
  auto host_at = [&](int gemm, int operand, size_t i) { return &host[(gemm * 3 + operand) * n_active + i]; };
  auto linear = [&](int gemm, const std::vector<int>& tokens, int N, int K, size_t lo) {
    run.grouped &= GroupedLinear(handle, args.grouped_gemm, tokens, N, K, dev_at(gemm, 0, lo), dev_at(gemm, 1, lo),
                                 const_cast<void* const*>(dev_at(gemm, 2, lo)), host_at(gemm, 0, lo),
                                 host_at(gemm, 1, lo), host_at(gemm, 2, lo));
  };
  for (size_t b = 0; b + 1 < begin.size(); ++b) {
    const size_t lo = begin[b], hi = begin[b + 1];
    bf16* cursor = args.dequant;
    std::vector<int> tokens;
    for (size_t i = lo; i < hi; ++i) {
      const ExpertCuda& w = args.experts[active[i]];
      Operand(w.gate, &cursor, stream);
      Operand(w.up, &cursor, stream);
      Operand(w.down, &cursor, stream);
      tokens.push_back(args.offsets[active[i] + 1] - args.offsets[active[i]]);
    }
    linear(0, tokens, static_cast<int>(I), static_cast<int>(H), lo);
    linear(1, tokens, static_cast<int>(I), static_cast<int>(H), lo);
    // The batch's experts are consecutive in expert order, so their rows are one contiguous range.
    const int64_t r0 = args.offsets[active[lo]], r1 = args.offsets[active[hi - 1] + 1];
    SiluMulCuda(args.gate + r0 * I, args.up + r0 * I, (r1 - r0) * I, args.gate + r0 * I, stream);
    linear(2, tokens, static_cast<int>(H), static_cast<int>(I), lo);
  }
  run.batches = static_cast<int>(begin.size() - 1);
  return run;
}

}  // namespace indexcache
