// IndexCache's multi-layer distillation loss for one Full layer's indexer, forward and backward.
//
// For query t with key set K_t (dense mode: the causal keys [0, query_offset + t]; sparse mode:
// the Full layer's top-k set S_t) and the layers j the Full layer serves (itself and the Shared
// layers after it):
//   p^(j)_t[s] = 1/H_A sum_h softmax_{s in K_t}(attn_scale * qa_j[t, h] . kv_j[s])   (teacher)
//   P_t[s]     = softmax_{s in K_t}(I[t, s]),  I[t, s] = sum_h w[t, h] ReLU(scale * q[t, h] . k[s])
//   L_t        = 1/|S| sum_j KL(p^(j)_t || P_t)
// The teachers are constants (the main model is frozen). Since every p^(j)_t sums to 1,
//   dL_t / dI[t, s] = P_t[s] - pbar_t[s],   pbar_t = mean_j p^(j)_t,
// the same gradient as KL(pbar_t || P_t): only the mean distribution matters for training.
// That gradient flows to q, k and w through the ReLU (ReLU'(0) = 0).
//
// The reference works one query row at a time: O(L) memory per row, never a [T, L] matrix. It is
// templated so the finite-difference gradient check runs in double.
#pragma once

#include <cstdint>
#include <vector>

namespace indexcache {

template <typename T>
struct DistillLossParamsT {
  // Student: the Full layer's indexer, rope applied.
  const T* q = nullptr;        // [Tq, HI, D]
  const T* k = nullptr;        // [L, D]
  const T* w = nullptr;        // [Tq, HI] (n_heads^-0.5 folded in)
  int64_t Tq = 0, L = 0, HI = 0, D = 0;
  T index_scale = 1;           // inside the ReLU
  int64_t query_offset = 0;    // causal: query t sees keys [0, query_offset + t]
  // Teachers: the served layers' absorbed attention inputs.
  std::vector<const T*> attn_q;   // per served layer [Tq, HA, DA]
  std::vector<const T*> attn_kv;  // per served layer [L, DA]
  int64_t HA = 0, DA = 0;
  T attn_scale = 1;
  // Sparse mode: restrict to the Full layer's top-k (-1 entries ignored, duplicates once).
  bool sparse = false;
  const int32_t* topk = nullptr;  // [Tq, K]
  int64_t K = 0;
  // Outputs. loss: sum over queries of L_t. Gradients are d(sum_t L_t) and are ACCUMULATED into
  // (so several sequences or micro-batches add up); any may be null.
  double* loss = nullptr;
  T* grad_q = nullptr;         // [Tq, HI, D]
  T* grad_k = nullptr;         // [L, D]
  T* grad_w = nullptr;         // [Tq, HI]
};

template <typename T>
void DistillLossCpu(const DistillLossParamsT<T>& p);

using DistillLossParams = DistillLossParamsT<float>;

}  // namespace indexcache
