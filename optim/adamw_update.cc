#include "optim/adamw_update.h"

namespace indexcache {

void AdamWUpdateCpu(float* param, float* exp_avg, float* exp_avg_sq, const float* grad, int64_t n,
                    const AdamWScalars& s) {
#pragma omp parallel for schedule(static) if (n >= (1 << 18))
  for (int64_t i = 0; i < n; ++i) AdamWElement(param[i], exp_avg[i], exp_avg_sq[i], grad[i], s);
}

}  // namespace indexcache
