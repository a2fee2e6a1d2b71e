// The routed experts' MLPs over the permuted buffer as grouped cuBLAS GEMMs (cuBLAS and the CUDA
// kernels of fp8_dequant_cuda.h / elementwise_cuda.h; no kernel of its own). The reference is the
// CPU backend's per-expert loop (Backend::ExpertMlps in model/cpu_backend.cc): for each expert e
// with rows, out[rows of e] = down_e(silu(gate_e x) * up_e x) over x's rows offsets[e]..offsets[e+1].
//
// One cublasGemmGroupedBatchedEx each for gate, up and down covers every expert of a batch (one
// problem per expert with rows; experts without rows cost nothing), with one SiluMul over the
// batch's contiguous rows between. bf16 experts are all one batch. FP8-resident experts are
// dequantised into a caller-owned bf16 scratch first; the scratch bounds the batch: as many
// experts as their dequantised matrices fit (at least one), then the next batch reuses it
// (stream order makes the reuse safe: the batch's GEMMs run before the next dequantisation).
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

#include <cublas_v2.h>
#include <cuda_bf16.h>
#include <cuda_runtime_api.h>

namespace indexcache {

// One weight matrix [rows, cols] on the device: bf16, or e4m3 bytes + fp32 block scales.
struct ExpertMatrixCuda {
  const void* values = nullptr;
  const float* scale_inv = nullptr;  // non-null iff FP8
  int64_t rows = 0, cols = 0, block_rows = 0, block_cols = 0;
  bool fp8() const { return scale_inv != nullptr; }
  // bf16 elements of scratch this matrix needs (0 for a bf16 one).
  int64_t scratch_elements() const { return fp8() ? rows * cols : 0; }
};

struct ExpertCuda {
  ExpertMatrixCuda gate, up, down;  // [I, H], [I, H], [H, I]
};

struct MoeExpertsCudaArgs {
  std::vector<ExpertCuda> experts;  // E experts, all of the same I and H
  std::vector<int32_t> offsets;     // host copy of the [E + 1] expert offsets (MoeGroupByExpertCuda)
  const __nv_bfloat16* x = nullptr; // [n, H] permuted rows, n = offsets[E]
  __nv_bfloat16* gate = nullptr;    // [n, I] scratch (holds silu(gate) * up afterwards)
  __nv_bfloat16* up = nullptr;      // [n, I] scratch
  __nv_bfloat16* out = nullptr;     // [n, H] written (not accumulated)
  __nv_bfloat16* dequant = nullptr; // bf16 scratch for FP8 experts, dequant_elements long
  int64_t dequant_elements = 0;     // >= the largest single expert's scratch_elements() sum
  void* pointers = nullptr;         // device scratch of MoeExpertsCudaPointerBytes(E)
  // One cublasGemmGroupedBatchedEx per GEMM and batch, or (default) one cublasGemmEx per expert:
  // measured on an H200 at V3.2 size, cuBLAS 13.0's grouped call reaches 226-276 TFLOP/s and the
  // per-expert loop 242-591 (2.1x faster at 16K-32K tokens; docs/benchmarks.md).
  bool grouped_gemm = false;
};

// Device bytes for the GEMMs' pointer arrays (three per GEMM, three GEMMs, E experts).
size_t MoeExpertsCudaPointerBytes(int64_t E);

// bf16 scratch elements one expert needs when it is FP8 (0 when bf16).
int64_t MoeExpertScratchElements(const ExpertCuda& e);

struct MoeExpertsCudaRun {
  int batches = 0;       // dequantisation batches (1 for bf16 experts)
  bool grouped = true;   // false if per-expert GEMMs ran (asked for, or cuBLAS refused the grouped call)
};

// Queues every batch on `stream` (cuBLAS' stream is set to it).
MoeExpertsCudaRun MoeExpertMlpsCuda(cublasHandle_t handle, const MoeExpertsCudaArgs& args, cudaStream_t stream);

}  // namespace indexcache
