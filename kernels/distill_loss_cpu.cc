#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "kernels/distill_loss.h"

namespace indexcache {

namespace {

// The key set of query t: causal keys, or the distinct valid top-k entries (sorted).
template <typename T>
void KeySet(const DistillLossParamsT<T>& p, int64_t t, std::vector<int64_t>* keys) {
  keys->clear();
  const int64_t end = std::min<int64_t>(p.query_offset + t + 1, p.L);
  if (!p.sparse) {
    for (int64_t s = 0; s < end; ++s) keys->push_back(s);
    return;
  }
  for (int64_t j = 0; j < p.K; ++j) {
    const int32_t s = p.topk[t * p.K + j];
    if (s >= 0 && s < end) keys->push_back(s);
  }
  std::sort(keys->begin(), keys->end());
  keys->erase(std::unique(keys->begin(), keys->end()), keys->end());
}

}  // namespace

template <typename T>
void DistillLossCpu(const DistillLossParamsT<T>& p) {
  const int64_t num_served = static_cast<int64_t>(p.attn_q.size());
  std::vector<int64_t> keys;
  std::vector<double> logits, pbar, teacher, student;
  double total = 0.0;
  for (int64_t t = 0; t < p.Tq; ++t) {
    KeySet(p, t, &keys);
    const int64_t n = static_cast<int64_t>(keys.size());
    if (n == 0) continue;
    // --- teachers: each served layer's head-averaged attention over the key set ---------------
    pbar.assign(n, 0.0);
    double teacher_entropy_term = 0.0;  // sum_j sum_s p_j log p_j, for the reported loss
    for (int64_t j = 0; j < num_served; ++j) {
      teacher.assign(n, 0.0);
      for (int64_t h = 0; h < p.HA; ++h) {
        const T* qa = p.attn_q[j] + (t * p.HA + h) * p.DA;
        logits.resize(n);
        double mx = -std::numeric_limits<double>::infinity();
        for (int64_t i = 0; i < n; ++i) {
          const T* kv = p.attn_kv[j] + keys[i] * p.DA;
          double dot = 0.0;
          for (int64_t d = 0; d < p.DA; ++d) dot += double(qa[d]) * double(kv[d]);
          logits[i] = double(p.attn_scale) * dot;
          mx = std::max(mx, logits[i]);
        }
        double sum = 0.0;
        for (int64_t i = 0; i < n; ++i) sum += std::exp(logits[i] - mx);
        for (int64_t i = 0; i < n; ++i) teacher[i] += std::exp(logits[i] - mx) / sum / double(p.HA);
      }
      for (int64_t i = 0; i < n; ++i) {
        pbar[i] += teacher[i] / double(num_served);
        if (teacher[i] > 0) teacher_entropy_term += teacher[i] * std::log(teacher[i]) / double(num_served);
      }
    }
    // --- student: softmax of the index scores over the same key set ----------------------------
    student.resize(n);
    double mx = -std::numeric_limits<double>::infinity();
    for (int64_t i = 0; i < n; ++i) {
      const T* ks = p.k + keys[i] * p.D;
      double score = 0.0;
      for (int64_t h = 0; h < p.HI; ++h) {
        const T* qh = p.q + (t * p.HI + h) * p.D;
        double dot = 0.0;
        for (int64_t d = 0; d < p.D; ++d) dot += double(qh[d]) * double(ks[d]);
        score += double(p.w[t * p.HI + h]) * std::max(double(p.index_scale) * dot, 0.0);
      }
      student[i] = score;
      mx = std::max(mx, score);
    }
    double sum = 0.0;
    for (int64_t i = 0; i < n; ++i) sum += std::exp(student[i] - mx);
    const double lse = mx + std::log(sum);
    // KL(p_j || P) averaged over j = sum_j mean p_j log p_j - sum_s pbar_s log P_s.
    double cross = 0.0;
    for (int64_t i = 0; i < n; ++i) cross += pbar[i] * (student[i] - lse);
    total += teacher_entropy_term - cross;

    // --- backward: dI = P - pbar, through the ReLU into q, k and w ------------------------------
    if (!p.grad_q && !p.grad_k && !p.grad_w) continue;
    for (int64_t i = 0; i < n; ++i) {
      const double dI = std::exp(student[i] - lse) - pbar[i];
      const T* ks = p.k + keys[i] * p.D;
      for (int64_t h = 0; h < p.HI; ++h) {
        const T* qh = p.q + (t * p.HI + h) * p.D;
        double dot = 0.0;
        for (int64_t d = 0; d < p.D; ++d) dot += double(qh[d]) * double(ks[d]);
        const double a = double(p.index_scale) * dot;
        if (a <= 0) continue;
        if (p.grad_w) p.grad_w[t * p.HI + h] += static_cast<T>(dI * a);
        const double coef = dI * double(p.w[t * p.HI + h]) * double(p.index_scale);
        if (p.grad_q) {
          T* gq = p.grad_q + (t * p.HI + h) * p.D;
          for (int64_t d = 0; d < p.D; ++d) gq[d] += static_cast<T>(coef * double(ks[d]));
        }
        if (p.grad_k) {
          T* gk = p.grad_k + keys[i] * p.D;
          for (int64_t d = 0; d < p.D; ++d) gk[d] += static_cast<T>(coef * double(qh[d]));
        }
      }
    }
  }
  if (p.loss) *p.loss += total;
}

template void DistillLossCpu<float>(const DistillLossParamsT<float>&);
template void DistillLossCpu<double>(const DistillLossParamsT<double>&);

}  // namespace indexcache
