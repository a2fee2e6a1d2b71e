#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>
#include <vector>

#include "kernels/moe_routing.h"

namespace indexcache {

void MoeRoutingCpu(const MoeRoutingParams& p) {
  const int64_t per_group = p.E / p.n_group;
  std::vector<float> scores(p.E), choice(p.E), group_score(p.n_group);
  std::vector<int32_t> order(std::max(p.E, p.n_group));
  for (int64_t t = 0; t < p.T; ++t) {
    const float* logits = p.logits + t * p.E;
    for (int64_t e = 0; e < p.E; ++e) {
      scores[e] = MoeSigmoid(logits[e]);
      choice[e] = MoeRankKey(scores[e] + (p.bias ? p.bias[e] : 0.0f));
    }
    if (p.n_group > 1) {
      for (int64_t g = 0; g < p.n_group; ++g) {
        const float* c = &choice[g * per_group];
        float best = -std::numeric_limits<float>::infinity(), second = best;
        for (int64_t i = 0; i < per_group; ++i) {
          if (c[i] > best) { second = best; best = c[i]; }
          else if (c[i] > second) { second = c[i]; }
        }
        group_score[g] = MoeRankKey(best + second);
      }
      std::iota(order.begin(), order.begin() + p.n_group, 0);
      std::stable_sort(order.begin(), order.begin() + p.n_group,
                       [&](int32_t a, int32_t b) { return group_score[a] > group_score[b]; });
      std::vector<bool> keep(p.n_group, false);
      for (int64_t i = 0; i < p.topk_group; ++i) keep[order[i]] = true;
      for (int64_t e = 0; e < p.E; ++e) {
        if (!keep[e / per_group]) choice[e] = -std::numeric_limits<float>::infinity();
      }
    }
    std::iota(order.begin(), order.begin() + p.E, 0);
    std::stable_sort(order.begin(), order.begin() + p.E, [&](int32_t a, int32_t b) { return choice[a] > choice[b]; });
    int32_t* experts = p.out_experts + t * p.topk;
    float* weights = p.out_weights + t * p.topk;
    float sum = 0.0f;
    for (int64_t j = 0; j < p.topk; ++j) {
      experts[j] = order[j];
      weights[j] = scores[order[j]];
      sum += weights[j];
    }
    for (int64_t j = 0; j < p.topk; ++j) {
      if (p.norm_topk_prob) weights[j] /= (sum + 1e-20f);
      weights[j] *= p.routed_scaling_factor;
    }
  }
}

}  // namespace indexcache
