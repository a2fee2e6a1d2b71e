// Fused distillation loss forward + backward on the GPU. The algorithm is described in
// kernels/distill_loss_cuda.h; the comments here are about the mechanics. The shared pieces are in
// distill_loss_cuda_common.cuh, the student phase in distill_student_cuda.cuh, the wgmma teacher
// in distill_teacher_wgmma.cuh; this file holds phases 0, 1 (mma.sync teacher) and 3, the kernel
// and the host side.
#include "kernels/distill_loss_cuda.h"

#include <algorithm>
#include <climits>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>

#include "core/cuda_check.h"
#include "kernels/distill_loss_cuda_common.cuh"
#include "kernels/distill_student_cuda.cuh"
#include "kernels/distill_teacher_wgmma.cuh"
#include "kernels/ptx.cuh"

namespace indexcache {
namespace {

[[noreturn]] void Fail(const char* msg) {
  std::fprintf(stderr, "DistillLossCuda: %s\n", msg);
  std::fflush(stderr);
  std::abort();
}

// Phase 0: the query's key set. Dense: the causal keys [0, end), n = end, *keys = nullptr (key i
// is row i). Sparse: topk[t] bitonic-sorted in shared memory and compacted to its distinct valid
// keys (< end) in keys_slot (deterministic order). Returns n; all threads call it.
__device__ __forceinline__ int GatherQueryKeySet(const CtaContext& c, int64_t t, int64_t end, unsigned char* smem,
                                                 int* s_int, const int32_t** keys_out) {
  const KernelParams& kp = c.kp;
  const DistillLossCudaParams& p = c.p;
  const int tid = c.tid, lane = c.lane, warp = c.warp;
  int32_t* keys_slot = c.keys_slot;
  int n = 0;
  const int32_t* keys = nullptr;
  if (!p.sparse) {
    n = static_cast<int>(end > 0 ? end : 0);
  } else {
    int* s_sort = kp.plan.SortKeys(smem);
    const int N = kp.plan.Kp2;
    for (int i = tid; i < N; i += kThreads) {
      int v = INT_MAX;
      if (i < p.K) {
        const int32_t s = p.topk[t * p.K + i];
        if (s >= 0 && s < end) v = s;
      }
      s_sort[i] = v;
    }
    __syncthreads();
    for (int kk = 2; kk <= N; kk <<= 1) {
      for (int j = kk >> 1; j > 0; j >>= 1) {
        for (int i = tid; i < N; i += kThreads) {
          const int ixj = i ^ j;
          if (ixj > i) {
            const int a = s_sort[i], b = s_sort[ixj];
            if ((a > b) == ((i & kk) == 0)) {
              s_sort[i] = b;
              s_sort[ixj] = a;
            }
          }
        }
        __syncthreads();
      }
    }
    int base = 0;
    for (int c0 = 0; c0 < N; c0 += kThreads) {
      const int i = c0 + tid;
      const bool f = i < N && s_sort[i] != INT_MAX && (i == 0 || s_sort[i] != s_sort[i - 1]);
      const unsigned ballot = __ballot_sync(0xffffffffu, f);
      if (lane == 0) s_int[warp] = __popc(ballot);
      __syncthreads();
      int off = base;
      for (int w2 = 0; w2 < warp; ++w2) off += s_int[w2];
      if (f) keys_slot[off + __popc(ballot & ((1u << lane) - 1u))] = s_sort[i];
      for (int w2 = 0; w2 < kWarps; ++w2) base += s_int[w2];
      __syncthreads();
    }
    n = base;
    keys = keys_slot;
    __syncthreads();  // keys visible to the block; s_sort is reused below
  }
  *keys_out = keys;
  return n;
}

// Phase 1: the teachers' target distribution. For each served layer j, qa_j[t] goes to shared
// memory and the key set streams through 2 stages of kKT kv rows twice: sweep 1 gives each head's
// online log-sum-exp (log2 domain, registers), sweep 2 rebuilds exp(logit - lse), sums it over
// heads per key and adds it / num_served into pbar; *ent accumulates the teacher entropy
// sum_j sum_s p_j log p_j / S (threads < kKT). All threads call it.
__device__ __forceinline__ void AccumulateTeacherDistribution(const CtaContext& c, int64_t t, int n,
                                                              const int32_t* keys, int num_tiles,
                                                              float (*s_part)[kSKT], double* ent_out) {
  const KernelParams& kp = c.kp;
  const DistillLossCudaParams& p = c.p;
  const int tid = c.tid, lane = c.lane, warp = c.warp;
  const int HA = c.HA, DA = c.DA, RGA = c.RGA;
  const float t_scale2 = c.t_scale2;
  float* pbar = c.pbar;
  __nv_bfloat16* s_qa = c.s_qa;
  __nv_bfloat16* s_kv = c.s_kv;
  double ent = *ent_out;
  for (int j = 0; j < p.num_served; ++j) {
    const __nv_bfloat16* kv = p.attn_kv[j];
    __syncthreads();  // previous users of the smem are done
    LoadBlock(s_qa, kp.plan.strideA, p.attn_q[j] + t * p.HA * p.DA, HA, DA, kp.plan.HAp, kp.plan.DAp);
    // Rows r0 = warp*16 + lane/4 and r1 = r0 + 8; log2-domain running max and sum.
    float m0 = -INFINITY, m1 = -INFINITY, l0 = 0.f, l1 = 0.f;
    const int r0 = warp * 16 + (lane >> 2), r1 = r0 + 8;
    for (int sweep = 0; sweep < 2; ++sweep) {
      const float lse0 = m0 + log2f(l0), lse1 = m1 + log2f(l1);
      __syncthreads();  // the previous sweep's last tile is consumed
      LoadTile<kKT>(s_kv, kp.plan.strideA, kv, DA, kp.plan.DAp, 0, n, keys);
      CpAsyncCommit();
      for (int tile = 0; tile < num_tiles; ++tile) {
        const __nv_bfloat16* buf = s_kv + (tile & 1) * kKT * kp.plan.strideA;
        CpAsyncWait<0>();
        __syncthreads();
        if (tile + 1 < num_tiles) {
          LoadTile<kKT>(s_kv + ((tile + 1) & 1) * kKT * kp.plan.strideA, kp.plan.strideA, kv, DA, kp.plan.DAp, (tile + 1) * kKT, n,
                   keys);
        }
        CpAsyncCommit();
        const int nv = min(kKT, n - tile * kKT);
        if (warp < RGA) {
          float acc[4][4] = {};
          WarpMma<4, false, false>(acc, s_qa, kp.plan.strideA, warp * 16, buf, kp.plan.strideA, 0, kp.plan.DAp);
          if (sweep == 0) {
            float mx0 = -INFINITY, mx1 = -INFINITY;
#pragma unroll
            for (int nt = 0; nt < 4; ++nt) {
#pragma unroll
              for (int e = 0; e < 4; ++e) {
                const int col = nt * 8 + 2 * (lane & 3) + (e & 1);
                const float x = col < nv ? acc[nt][e] * t_scale2 : -INFINITY;
                acc[nt][e] = x;
                if (e < 2) mx0 = fmaxf(mx0, x); else mx1 = fmaxf(mx1, x);
              }
            }
            mx0 = fmaxf(mx0, __shfl_xor_sync(0xffffffffu, mx0, 1));
            mx0 = fmaxf(mx0, __shfl_xor_sync(0xffffffffu, mx0, 2));
            mx1 = fmaxf(mx1, __shfl_xor_sync(0xffffffffu, mx1, 1));
            mx1 = fmaxf(mx1, __shfl_xor_sync(0xffffffffu, mx1, 2));
            const float nm0 = fmaxf(m0, mx0), nm1 = fmaxf(m1, mx1);  // finite: nv >= 1
            float s0 = 0.f, s1 = 0.f;
#pragma unroll
            for (int nt = 0; nt < 4; ++nt) {
              s0 += exp2f(acc[nt][0] - nm0) + exp2f(acc[nt][1] - nm0);
              s1 += exp2f(acc[nt][2] - nm1) + exp2f(acc[nt][3] - nm1);
            }
            s0 += __shfl_xor_sync(0xffffffffu, s0, 1);
            s0 += __shfl_xor_sync(0xffffffffu, s0, 2);
            s1 += __shfl_xor_sync(0xffffffffu, s1, 1);
            s1 += __shfl_xor_sync(0xffffffffu, s1, 2);
            l0 = l0 * exp2f(m0 - nm0) + s0;
            l1 = l1 * exp2f(m1 - nm1) + s1;
            m0 = nm0;
            m1 = nm1;
          } else {
            // Column sums of exp(logit - lse) over this warp's valid heads.
            float cs[4][2];
#pragma unroll
            for (int nt = 0; nt < 4; ++nt) {
#pragma unroll
              for (int c = 0; c < 2; ++c) {
                const int col = nt * 8 + 2 * (lane & 3) + c;
                float v = 0.f;
                if (col < nv) {
                  if (r0 < HA) v += exp2f(acc[nt][c] * t_scale2 - lse0);
                  if (r1 < HA) v += exp2f(acc[nt][2 + c] * t_scale2 - lse1);
                }
                v += __shfl_xor_sync(0xffffffffu, v, 4);
                v += __shfl_xor_sync(0xffffffffu, v, 8);
                v += __shfl_xor_sync(0xffffffffu, v, 16);
                cs[nt][c] = v;
              }
            }
            if (lane < 4) {
#pragma unroll
              for (int nt = 0; nt < 4; ++nt) {
                s_part[warp][nt * 8 + 2 * lane] = cs[nt][0];
                s_part[warp][nt * 8 + 2 * lane + 1] = cs[nt][1];
              }
            }
          }
        }
        if (sweep == 1) {
          __syncthreads();
          if (tid < nv) {
            float sum = 0.f;
            for (int g = 0; g < RGA; ++g) sum += s_part[g][tid];
            const float pj = sum / static_cast<float>(HA);
            const float contrib = pj / static_cast<float>(p.num_served);
            const int i = tile * kKT + tid;
            if (j == 0) pbar[i] = contrib; else pbar[i] += contrib;
            if (pj > 0.f) ent += static_cast<double>(pj) * log(static_cast<double>(pj)) / p.num_served;
          }
        }
      }
      CpAsyncWait<0>();
    }
  }
  *ent_out = ent;
}

// Phase 3: write back: grad_q[t] and grad_w[t] (one CTA per query: deterministic) and the query's
// loss ent - cross, summed over the block in fp64 and added to *loss. All threads call it.
__device__ __forceinline__ void WriteBackQueryResults(const CtaContext& c, int64_t t, float (*s_gw)[kMaxRows],
                                                      double (*s_red)[kWarps], double ent, double cross) {
  const KernelParams& kp = c.kp;
  const DistillLossCudaParams& p = c.p;
  const int tid = c.tid, lane = c.lane, warp = c.warp;
  const int HI = c.HI, D = c.D;
  const bool want_grads = c.want_grads;
  const float* s_gq = c.s_gq;
  if (want_grads) {
    if (p.grad_q) {
      for (int e = tid; e < HI * D; e += kThreads) {
        const int h = e / D, d = e - h * D;
        p.grad_q[(t * p.HI + h) * p.D + d] += s_gq[h * kp.plan.Dp + d];
      }
    }
    if (p.grad_w) {
      for (int h = tid; h < HI; h += kThreads) {
        float sum = 0.f;
#pragma unroll
        for (int qq = 0; qq < kGwParts; ++qq) sum += s_gw[qq][h];  // fixed order: deterministic
        p.grad_w[t * p.HI + h] += sum;
      }
    }
  }
  if (p.loss) {
    double v = ent - cross;
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    if (lane == 0) s_red[1][warp] = v;
    __syncthreads();
    if (tid == 0) {
      double sum = 0.0;
      for (int w2 = 0; w2 < kWarps; ++w2) sum += s_red[1][w2];
      atomicAdd(p.loss, sum);
    }
  }
}

// kWgmmaTeacher: phase 1 runs distill_wgmma::TeacherPhase (kernels/distill_teacher_wgmma.cuh)
// instead of AccumulateTeacherDistribution; the other phases are the same code.
template <bool kWgmmaTeacher>
__global__ void __launch_bounds__(kThreads, 1) DistillLossKernel(const KernelParams kp) {
  extern __shared__ __align__(16) unsigned char smem[];
  __shared__ float s_part[kWarps][kSKT];      // per row group partial column sums
  __shared__ float s_w[kMaxRows];             // w[t]
  __shared__ double s_red[2][kWarps];
  __shared__ int s_int[kWarps + 2];

  const DistillLossCudaParams& p = kp.p;
  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  float(*s_gw)[kMaxRows] = reinterpret_cast<float(*)[kMaxRows]>(kp.plan.GradW(smem));  // per 16-key quarter
  float* s_di = kp.plan.Di(smem);                                                       // the tile's dI
  const CtaContext c{kp,
                     p,
                     tid,
                     lane,
                     warp,
                     static_cast<int>(p.HA),
                     static_cast<int>(p.DA),
                     static_cast<int>(p.HI),
                     static_cast<int>(p.D),
                     kp.plan.HAp / 16,
                     kp.plan.HIp / 16,
                     kp.pbar_ws + static_cast<int64_t>(blockIdx.x) * kp.slot_floats,
                     p.sparse ? kp.keys_ws + static_cast<int64_t>(blockIdx.x) * p.K : nullptr,
                     p.attn_scale * kLog2e,
                     p.grad_q || p.grad_k || p.grad_w,
                     kp.plan.TeacherQ(smem),
                     kp.plan.TeacherKv(smem),
                     kp.plan.StudentQ(smem),
                     kp.plan.StudentK(smem),
                     kp.plan.Coef(smem),
                     kp.plan.GradQ(smem)};

  while (true) {
    __syncthreads();
    if (tid == 0) s_int[kWarps] = static_cast<int>(atomicAdd(kp.counter, 1u));
    __syncthreads();
    const int64_t order = s_int[kWarps];
    if (order >= p.Tq) break;
    const int64_t t = p.sparse ? order : p.Tq - 1 - order;
    const int64_t end = min(p.query_offset + t + 1, p.L);

    const int32_t* keys = nullptr;
    const int n = GatherQueryKeySet(c, t, end, smem, s_int, &keys);  // phase 0
    if (n == 0) continue;
    const int num_tiles = (n + kKT - 1) / kKT;

    double ent = 0.0;    // sum_j sum_s p_j log p_j / S  (threads < kKT)
    double cross = 0.0;  // sum_s pbar (I - lse)          (threads < kKT)

    if constexpr (kWgmmaTeacher) {  // phase 1
      const uint32_t raw = static_cast<uint32_t>(__cvta_generic_to_shared(smem));
      const uint32_t pad = ((raw + 1023u) & ~1023u) - raw;
      float* s_col = reinterpret_cast<float*>(smem + pad + distill_wgmma::kStages * distill_wgmma::kTileBytes);
      distill_wgmma::TeacherPhase(p.attn_q, p.attn_kv, p.num_served, t, c.HA, c.DA, c.t_scale2, n, keys, c.pbar,
                                  raw + pad, s_col, &ent);
    } else {
      AccumulateTeacherDistribution(c, t, n, keys, num_tiles, s_part, &ent);
    }
    if (kp.warp_keys_student) {  // phase 2
      StudentWarpKeys(c, t, n, keys, s_part, s_gw, s_w, &cross);
    } else {
      StudentScoresAndGradients(c, t, n, keys, s_part, s_di, s_gw, s_w, s_red, &cross);
    }
    __syncthreads();
    WriteBackQueryResults(c, t, s_gw, s_red, ent, cross);  // phase 3
  }
}

struct Layout {
  bool wgmma;  // the teacher path (DistillTeacherImpl resolved for the device and shapes)
  bool warp_keys_student;  // the student path (DistillStudentImpl resolved for the shapes)
  DistillSmemPlan plan;
  int64_t slot_floats;
  size_t smem_bytes;
  int grid;
};

Layout MakeLayout(const DistillLossCudaParams& p) {
  if (p.Tq < 0 || p.L < 0) Fail("negative sizes");
  if (p.HI < 1 || p.HI > kMaxRows || p.HA < 1 || p.HA > kMaxRows) Fail("need 1 <= HI, HA <= 128");
  if (p.D < 8 || p.D % 8 != 0 || p.D > 256 || p.DA < 8 || p.DA % 8 != 0) {
    Fail("need D, DA multiples of 8 and D <= 256");
  }
  if (p.num_served < 1 || p.num_served > kDistillMaxServed) Fail("need 1 <= num_served <= 8");
  if (p.sparse && (p.K < 1 || p.K > (1 << 20))) Fail("sparse mode needs 1 <= K <= 2^20");
  if (p.L >= (int64_t{1} << 31)) Fail("L must be < 2^31");
  Layout l;
  int dev = 0, sms = 0, major = 0, minor = 0;
  CUDA_CHECK(cudaGetDevice(&dev));
  CUDA_CHECK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, dev));
  CUDA_CHECK(cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, dev));
  CUDA_CHECK(cudaDeviceGetAttribute(&minor, cudaDevAttrComputeCapabilityMinor, dev));
  const bool wgmma_ok = major == 9 && minor == 0 && p.DA <= distill_wgmma::kMaxDA;
  if (p.teacher_impl == DistillTeacherImpl::kWgmma && !wgmma_ok) Fail("the wgmma teacher needs sm_90 and DA <= 576");
  l.wgmma = p.teacher_impl == DistillTeacherImpl::kWgmma || (p.teacher_impl == DistillTeacherImpl::kAuto && wgmma_ok);
  l.plan = DistillSmemPlan::For(p);
  // The warp-keys student keeps grad_q in registers: at most kMaxGqItems 16 x 16 tiles per warp.
  const bool warp_keys_ok = (l.plan.HIp / 16) * (l.plan.Dp / 16) <= kWarps * kMaxGqItems;
  if (p.student_impl == DistillStudentImpl::kWarpKeys && !warp_keys_ok) {
    Fail("the warp-keys student needs (HI / 16) * (D / 16) <= 64 (rounded up)");
  }
  l.warp_keys_student = p.student_impl == DistillStudentImpl::kWarpKeys ||
                        (p.student_impl == DistillStudentImpl::kAuto && warp_keys_ok);
  l.slot_floats = RoundUp(std::max<int64_t>(p.sparse ? p.K : p.L, 1), 64);
  l.smem_bytes = l.plan.Bytes(p.sparse, l.wgmma);
  l.grid = std::max(sms, 1);
  return l;
}

size_t WorkspaceBytes(const DistillLossCudaParams& p, const Layout& l) {
  size_t bytes = 256;  // counter
  bytes += static_cast<size_t>(l.grid) * l.slot_floats * 4;
  if (p.sparse) bytes += static_cast<size_t>(l.grid) * RoundUp(p.K, 64) * 4;
  return bytes;
}

}  // namespace

size_t DistillLossCudaWorkspaceBytes(const DistillLossCudaParams& p) { return WorkspaceBytes(p, MakeLayout(p)); }

void DistillLossCuda(const DistillLossCudaParams& p) {
  const Layout l = MakeLayout(p);
  if (p.workspace == nullptr || p.workspace_bytes < WorkspaceBytes(p, l)) Fail("workspace too small");
  if (p.Tq == 0) return;
  int dev = 0, max_smem = 0;
  CUDA_CHECK(cudaGetDevice(&dev));
  CUDA_CHECK(cudaDeviceGetAttribute(&max_smem, cudaDevAttrMaxSharedMemoryPerBlockOptin, dev));
  const auto kernel = l.wgmma ? DistillLossKernel<true> : DistillLossKernel<false>;
  cudaFuncAttributes attr;
  CUDA_CHECK(cudaFuncGetAttributes(&attr, kernel));
  if (l.smem_bytes + attr.sharedSizeBytes > static_cast<size_t>(max_smem)) {
    Fail("shapes need more shared memory than the device has (HA, DA or sparse K too large)");
  }
  CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                  static_cast<int>(l.smem_bytes)));
  KernelParams kp;
  kp.p = p;
  kp.plan = l.plan;
  kp.slot_floats = l.slot_floats;
  kp.warp_keys_student = l.warp_keys_student;
  unsigned char* ws = static_cast<unsigned char*>(p.workspace);
  kp.counter = reinterpret_cast<unsigned int*>(ws);
  kp.pbar_ws = reinterpret_cast<float*>(ws + 256);
  kp.keys_ws = reinterpret_cast<int32_t*>(ws + 256 + static_cast<size_t>(l.grid) * l.slot_floats * 4);
  CUDA_CHECK(cudaMemsetAsync(kp.counter, 0, sizeof(unsigned int), p.stream));
  const int grid = static_cast<int>(std::min<int64_t>(p.Tq, l.grid));
  kernel<<<grid, kThreads, l.smem_bytes, p.stream>>>(kp);
  CUDA_CHECK(cudaGetLastError());
}

Status DistillLossCudaSupports(const DistillLossCudaSizes& s) {
  const auto unsupported = [](const std::string& what, const std::string& supported) {
    return Unimplemented(what + " is not supported by the CUDA distillation loss kernel (supported: " + supported + ")");
  };
  const auto field = [](const char* name, int64_t v) { return std::string("field '") + name + "' = " + std::to_string(v); };
  if (s.index_heads < 1 || s.index_heads > kMaxRows) return unsupported(field("index_n_heads", s.index_heads), "1 to 128");
  if (s.attention_heads < 1 || s.attention_heads > kMaxRows) {
    return unsupported(field("num_attention_heads", s.attention_heads), "1 to 128");
  }
  if (s.index_head_dim < 8 || s.index_head_dim % 8 != 0 || s.index_head_dim > 256) {
    return unsupported(field("index_head_dim", s.index_head_dim), "a multiple of 8 up to 256");
  }
  if (s.latent_dim < 8 || s.latent_dim % 8 != 0) {
    return unsupported("kv_lora_rank + qk_rope_head_dim = " + std::to_string(s.latent_dim), "a multiple of 8");
  }
  if (s.max_served < 1 || s.max_served > kDistillMaxServed) {
    return unsupported("a pattern whose Full layer serves " + std::to_string(s.max_served) + " layers",
                       "at most " + std::to_string(kDistillMaxServed) + " layers per Full layer, itself included");
  }
  if (s.sparse && (s.topk < 1 || s.topk > (1 << 20))) return unsupported(field("index_topk", s.topk), "1 to 2^20");
  return Status::Ok();
}

}  // namespace indexcache
