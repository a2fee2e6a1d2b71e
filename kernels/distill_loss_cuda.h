// IndexCache's multi-layer distillation loss, forward and backward, fused on the GPU (mirrors
// kernels/distill_loss.h; DistillLossCpu is the reference and defines the semantics).
//
// For query t with key set K_t (dense: causal keys [0, min(query_offset + t + 1, L)); sparse: the
// distinct valid entries of topk[t], -1 and past-causal entries ignored, duplicates once):
//   p^(j)_t = 1/HA sum_h softmax_{K_t}(attn_scale * qa_j[t, h] . kv_j[s])      (teachers, frozen)
//   P_t     = softmax_{K_t}(I[t, s]),  I[t, s] = sum_h w[t, h] ReLU(index_scale * q[t, h] . k[s])
//   L_t     = 1/S sum_j KL(p^(j)_t || P_t),   dL_t/dI[t, s] = P_t[s] - mean_j p^(j)_t[s]
//
// Algorithm (no [Tq, L] matrix is ever stored; one kernel launch, plus a memset of a counter):
// a persistent grid of one 256-thread CTA per SM takes queries from an atomic counter (dense mode:
// longest rows first). Per query t:
//  0. sparse mode: the top-k row is bitonic-sorted in shared memory and compacted to its distinct
//     valid keys (deterministic order), stored in the CTA's workspace slot.
//  1. for each served layer j, two sweeps over the key set. Sweep 1: the logits qa_j[t] . kv^T
//     give every head's online log-sum-exp, kept in registers. Sweep 2: the same products rebuild
//     exp(logit - lse), summed over heads per key (deterministic in-CTA reduction) and added into
//     pbar[key] (the CTA's O(|K_t|) fp32 workspace slot, L2-resident); the teacher entropy
//     sum_s p_j log p_j is accumulated on the way. Two implementations (DistillTeacherImpl):
//     wgmma (the default on sm_90, kernels/distill_teacher_wgmma.cuh): qa_j[t] held in registers
//     by 2 warpgroups (64 heads each), 64-key kv tiles in 128-byte-swizzled shared memory through
//     a 3-stage cp.async pipeline, wgmma m64n64k16 with A from registers, the warpgroups'
//     softmax work staggered by one tile (ping-pong); mma.sync (the original): qa_j[t] in shared
//     memory, 2 stages of 32 kv rows, mma.sync m16n8k16 with each warp owning 16 heads.
//  2. student: q[t] (HI x D bf16) goes to shared memory; the keys stream again in tiles of 64
//     (2 cp.async stages). Sweep A: I[t, s]
//     (mma.sync, ReLU and head weights in fp32, head reduction in shared memory) and its online
//     log-sum-exp. Sweep B: I again, dI = exp(I - lse) - pbar, the loss's cross term, then
//     coef[h, s] = dI * w[h] * index_scale * [a > 0] (bf16 in shared memory) and
//       grad_q[t]   += coef . k_tile           (mma.sync, fp32 accumulator in shared memory)
//       grad_k[s]   += coef^T . q[t]           (mma.sync, then float4 atomicAdd to global)
//       grad_w[t,h] += sum_s dI * ReLU(a)      (fp32, per-CTA deterministic)
//  That is the tiled student (DistillStudentImpl::kTiled). The default, kWarpKeys, computes the
//  same quantities with each warp owning 8 keys of every tile across all heads (I, its lse and
//  dI in-warp; grad_q and grad_w accumulated in registers; 2 barriers per tile in sweep B, 1 in A).
//  The loss is summed per query in fp64 and added to *loss with a double atomicAdd.
// Determinism: grad_q and grad_w are written by one CTA per query (deterministic); grad_k and loss
// use global atomics across queries (run-to-run differences at rounding level).
//
// Supported: 1 <= HI, HA <= 128; D, DA multiples of 8 with D <= 256; the wgmma teacher needs
// DA <= 576 (V3.2: 576) and takes 223 KiB of shared memory whatever the sizes; the mma.sync
// teacher HA16 * (DA16 + 8) * 2 + 2 * 32 * (DA16 + 8) * 2 bytes (V3.2: 219 KiB); the student
// (HI16 + 128) * (D16 + 8) * 2 + HI16 * 144 + HI16 * D16 * 4 + 2.3 KiB (V3.2: 94 KiB); each within
// the device's opt-in limit, checked at launch; 1 <= served layers <= 8; all tensors 16-byte
// aligned.
// Unsupported shapes or a short workspace abort with a message.
#pragma once

#include "core/status.h"

#include <cstddef>
#include <cstdint>

#include <cuda_bf16.h>
#include <cuda_runtime_api.h>

namespace indexcache {

constexpr int kDistillMaxServed = 8;

// How the teacher phase (step 1 above) runs. kWgmma (kernels/distill_teacher_wgmma.cuh): qa_j[t]
// held in registers by 2 warpgroups, 64-key kv tiles in a 3-stage pipeline, wgmma m64n64k16 with A
// from registers; needs an sm_90 device and DA <= 576. kMmaSync: the original mma.sync path above
// (any sm_80+ device, the shared-memory limit on HA and DA). kAuto: kWgmma where it applies.
enum class DistillTeacherImpl { kAuto = 0, kMmaSync = 1, kWgmma = 2 };

// How the student phase (step 2 above) splits its work over the 8 warps. kTiled: (16-head row
// group, 16-key quarter) items, the head reduction through shared memory, one warp doing each
// tile's softmax, grad_q accumulated in shared memory (4 barriers per tile in sweep B, 2 in A).
// kWarpKeys: each warp owns 8 keys of a tile across all heads (I complete in-warp, per-warp
// online lse, grad_q / grad_w in registers; 2 barriers per tile in sweep B, 1 in A); needs
// ceil(HI / 16) * ceil(D / 16) <= 64 (V3.2: 32). kAuto: kWarpKeys where it applies.
enum class DistillStudentImpl { kAuto = 0, kTiled = 1, kWarpKeys = 2 };

struct DistillLossCudaParams {
  // Student: the Full layer's indexer, rope applied.
  const __nv_bfloat16* q = nullptr;  // [Tq, HI, D] device
  const __nv_bfloat16* k = nullptr;  // [L, D]      device
  const float* w = nullptr;          // [Tq, HI]    device (n_heads^-0.5 folded in)
  int64_t Tq = 0, L = 0, HI = 0, D = 0;
  float index_scale = 1.0f;          // inside the ReLU
  int64_t query_offset = 0;          // causal: query t sees keys [0, query_offset + t]
  // Teachers: the served layers' absorbed attention inputs (the Full layer first, then its Shared
  // layers; the order does not matter).
  int num_served = 0;                                          // 1..kDistillMaxServed
  const __nv_bfloat16* attn_q[kDistillMaxServed] = {};         // each [Tq, HA, DA] device
  const __nv_bfloat16* attn_kv[kDistillMaxServed] = {};        // each [L, DA]      device
  int64_t HA = 0, DA = 0;
  float attn_scale = 1.0f;
  // Sparse mode: the Full layer's top-k rows (-1 entries ignored, duplicates once).
  bool sparse = false;
  const int32_t* topk = nullptr;     // [Tq, K] device
  int64_t K = 0;
  // Outputs, all ACCUMULATED into (+=), any may be null. loss: sum over queries of L_t.
  double* loss = nullptr;            // [1]         device
  float* grad_q = nullptr;           // [Tq, HI, D] device (one CTA per query: deterministic)
  float* grad_k = nullptr;           // [L, D]      device (float4 atomicAdd across queries)
  float* grad_w = nullptr;           // [Tq, HI]    device (deterministic)
  DistillTeacherImpl teacher_impl = DistillTeacherImpl::kAuto;
  DistillStudentImpl student_impl = DistillStudentImpl::kAuto;
  void* workspace = nullptr;         // DistillLossCudaWorkspaceBytes(*this) bytes, device
  size_t workspace_bytes = 0;
  cudaStream_t stream = nullptr;
};

// Scratch for the current device: per persistent CTA (one per SM) an fp32 slot of L (dense) or
// K (sparse) entries for the head-averaged teacher, plus K int32 keys in sparse mode, plus a
// counter. O(#SMs * L), never O(Tq * L).
size_t DistillLossCudaWorkspaceBytes(const DistillLossCudaParams& p);

// Asynchronous on p.stream.
void DistillLossCuda(const DistillLossCudaParams& p);

// The model sizes DistillLossCuda supports (the shared-memory fit of a given device is checked
// at launch): checked when training starts on CUDA. `max_served` is the most layers one Full layer
// serves (itself included) under the pattern. Errors name the config field.
struct DistillLossCudaSizes {
  int64_t index_heads = 0, index_head_dim = 0, attention_heads = 0, latent_dim = 0, max_served = 0, topk = 0;
  bool sparse = false;
};
indexcache::Status DistillLossCudaSupports(const DistillLossCudaSizes& sizes);

}  // namespace indexcache
