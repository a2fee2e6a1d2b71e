// The AdamW update of one fp32 buffer, shared by the CPU optimiser (optim/adamw.h) and the fused
// CUDA kernel (optim/adamw_cuda.h) so that both apply the same arithmetic.
//
// torch.optim.AdamW (amsgrad=False, maximize=False), step t counted from 1:
//   p  = p * (1 - lr * wd)                      decoupled weight decay, on the old p
//   m  = b1 * m + (1 - b1) * g
//   v  = b2 * v + (1 - b2) * g * g
//   p  = p - (lr / (1 - b1^t)) * m / (sqrt(v) / sqrt(1 - b2^t) + eps)
// which is p -= lr * m_hat / (sqrt(v_hat) + eps) arranged as PyTorch evaluates it. The per-step
// scalars are computed in fp64 (as PyTorch does with Python floats) and rounded to fp32 once;
// every element operation is fp32 with one rounding per operation (the CUDA kernel uses the
// _rn intrinsics so that nvcc does not fuse them into FMAs).
#pragma once

#include <cmath>
#include <cstdint>

#if defined(__CUDACC__)
#define IC_HOST_DEVICE __host__ __device__
#else
#define IC_HOST_DEVICE
#endif

namespace indexcache {

struct AdamWScalars {
  float decay;             // 1 - lr * weight_decay
  float beta1, one_minus_beta1;
  float beta2, one_minus_beta2;
  float step_size;         // lr / (1 - beta1^t)
  float bias_correction2_sqrt;  // sqrt(1 - beta2^t)
  float eps;
};

// Scalars for optimiser step `t` (1 for the first step).
inline AdamWScalars MakeAdamWScalars(double lr, double beta1, double beta2, double eps, double weight_decay,
                                     int64_t t) {
  const double bc1 = 1.0 - std::pow(beta1, static_cast<double>(t));
  const double bc2 = 1.0 - std::pow(beta2, static_cast<double>(t));
  AdamWScalars s;
  s.decay = static_cast<float>(1.0 - lr * weight_decay);
  s.beta1 = static_cast<float>(beta1);
  s.one_minus_beta1 = static_cast<float>(1.0 - beta1);
  s.beta2 = static_cast<float>(beta2);
  s.one_minus_beta2 = static_cast<float>(1.0 - beta2);
  s.step_size = static_cast<float>(lr / bc1);
  s.bias_correction2_sqrt = static_cast<float>(std::sqrt(bc2));
  s.eps = static_cast<float>(eps);
  return s;
}

// One element. Host: plain fp32 operations (x86-64 without FMA contraction rounds each). Device:
// round-to-nearest intrinsics, no contraction; sqrtf and '/' are IEEE-rounded without fast math.
IC_HOST_DEVICE inline void AdamWElement(float& p, float& m, float& v, float g, const AdamWScalars& s) {
#if defined(__CUDA_ARCH__)
  p = __fmul_rn(p, s.decay);
  m = __fadd_rn(__fmul_rn(s.beta1, m), __fmul_rn(s.one_minus_beta1, g));
  v = __fadd_rn(__fmul_rn(s.beta2, v), __fmul_rn(__fmul_rn(s.one_minus_beta2, g), g));
  const float denom = __fadd_rn(__fdiv_rn(__fsqrt_rn(v), s.bias_correction2_sqrt), s.eps);
  p = __fsub_rn(p, __fmul_rn(s.step_size, __fdiv_rn(m, denom)));
#else
  p = p * s.decay;
  m = s.beta1 * m + s.one_minus_beta1 * g;
  v = s.beta2 * v + s.one_minus_beta2 * g * g;
  const float denom = std::sqrt(v) / s.bias_correction2_sqrt + s.eps;
  p = p - s.step_size * (m / denom);
#endif
}

// The update over n elements of host memory (OpenMP across elements; each element's result
// does not depend on the thread count, so the step is bitwise reproducible).
void AdamWUpdateCpu(float* param, float* exp_avg, float* exp_avg_sq, const float* grad, int64_t n,
                    const AdamWScalars& s);

}  // namespace indexcache
