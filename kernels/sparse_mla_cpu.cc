#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "kernels/sparse_mla.h"

namespace indexcache {

void SparseMlaCpu(const SparseMlaParams& p) {
#pragma omp parallel
  {
    std::vector<float> logits(p.topk);
    std::vector<double> acc(p.d_v);
#pragma omp for collapse(2) schedule(static)
    for (int64_t t = 0; t < p.T; ++t) {
      for (int64_t h = 0; h < p.H; ++h) {
        const float* qh = p.q + (t * p.H + h) * p.d_qk;
        const int32_t* idx = p.indices + t * p.topk;
        float* out = p.out + (t * p.H + h) * p.d_v;
        float max_logit = -std::numeric_limits<float>::infinity();
        int64_t valid = 0;
        bool nan = false;
        for (int64_t j = 0; j < p.topk; ++j) {
          if (idx[j] < 0 || idx[j] >= p.L) continue;
          ++valid;
          const float* kv = p.kv + static_cast<int64_t>(idx[j]) * p.d_qk;
          float dot = 0.0f;
          for (int64_t d = 0; d < p.d_qk; ++d) dot += qh[d] * kv[d];
          logits[j] = dot * p.scale;
          nan = nan || std::isnan(logits[j]);
          max_logit = std::max(max_logit, logits[j]);
        }
        // "No valid key" means no index in range, not "no score above -inf": std::max drops NaN,
        // and treating NaN scores as absent keys used to launder them into finite zeros.
        if (valid == 0) {
          std::fill(out, out + p.d_v, 0.0f);
          if (p.lse) p.lse[t * p.H + h] = std::numeric_limits<float>::infinity();
          continue;
        }
        if (nan) {
          std::fill(out, out + p.d_v, std::numeric_limits<float>::quiet_NaN());
          if (p.lse) p.lse[t * p.H + h] = std::numeric_limits<float>::quiet_NaN();
          continue;
        }
        std::fill(acc.begin(), acc.end(), 0.0);
        double denom = 0.0;
        for (int64_t j = 0; j < p.topk; ++j) {
          if (idx[j] < 0 || idx[j] >= p.L) continue;
          const double w = std::exp(static_cast<double>(logits[j] - max_logit));
          denom += w;
          const float* kv = p.kv + static_cast<int64_t>(idx[j]) * p.d_qk;
          for (int64_t d = 0; d < p.d_v; ++d) acc[d] += w * kv[d];
        }
        for (int64_t d = 0; d < p.d_v; ++d) out[d] = static_cast<float>(acc[d] / denom);
        if (p.lse) p.lse[t * p.H + h] = static_cast<float>(max_logit + std::log(denom));
      }
    }
  }
}

}  // namespace indexcache
