#include "kernels/sparse_mla_generic_cuda.h"

#include <cmath>

#include "core/cuda_check.h"

namespace indexcache {

namespace {

constexpr int kThreads = 128;
constexpr int kMaxTopk = 8192;

// One block per (query, head): the logits of its selected keys go to shared memory (one warp per
// key), then every thread owns output dims d, d + blockDim, ... and sums p_j * kv[i_j, d].
__global__ void SparseMlaGenericKernel(SparseMlaCudaParams p) {
  extern __shared__ float logits[];  // [topk]
  __shared__ float reduce[kThreads / 32];
  const int64_t t = blockIdx.x / p.H, h = blockIdx.x % p.H;
  const __nv_bfloat16* q = p.q + (t * p.H + h) * p.d_qk;
  const int32_t* idx = p.indices + t * p.topk;
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  for (int64_t j = warp; j < p.topk; j += kThreads / 32) {
    const int32_t s = idx[j];
    float dot = 0.0f;
    if (s >= 0 && s < p.L) {
      const __nv_bfloat16* kv = p.kv + int64_t(s) * p.d_qk;
      for (int64_t d = lane; d < p.d_qk; d += 32) dot += __bfloat162float(q[d]) * __bfloat162float(kv[d]);
    }
    for (int o = 16; o > 0; o >>= 1) dot += __shfl_xor_sync(0xffffffffu, dot, o);
    if (lane == 0) logits[j] = (s >= 0 && s < p.L) ? dot * p.scale : -INFINITY;
  }
  __syncthreads();
  float mx = -INFINITY;
  for (int64_t j = threadIdx.x; j < p.topk; j += kThreads) mx = fmaxf(mx, logits[j]);
  for (int o = 16; o > 0; o >>= 1) mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, o));
  if (lane == 0) reduce[warp] = mx;
  __syncthreads();
  mx = -INFINITY;
  for (int w = 0; w < kThreads / 32; ++w) mx = fmaxf(mx, reduce[w]);
  __syncthreads();
  __nv_bfloat16* out = p.out + (t * p.H + h) * p.d_v;
  if (mx == -INFINITY) {  // no valid key
    for (int64_t d = threadIdx.x; d < p.d_v; d += kThreads) out[d] = __float2bfloat16(0.0f);
    if (p.lse && threadIdx.x == 0) p.lse[t * p.H + h] = INFINITY;
    return;
  }
  float sum = 0.0f;
  for (int64_t j = threadIdx.x; j < p.topk; j += kThreads) {
    const float e = logits[j] == -INFINITY ? 0.0f : expf(logits[j] - mx);
    logits[j] = e;
    sum += e;
  }
  for (int o = 16; o > 0; o >>= 1) sum += __shfl_xor_sync(0xffffffffu, sum, o);
  if (lane == 0) reduce[warp] = sum;
  __syncthreads();
  sum = 0.0f;
  for (int w = 0; w < kThreads / 32; ++w) sum += reduce[w];
  for (int64_t d = threadIdx.x; d < p.d_v; d += kThreads) {
    float acc = 0.0f;
    for (int64_t j = 0; j < p.topk; ++j) {
      if (logits[j] == 0.0f) continue;
      acc += logits[j] * __bfloat162float(p.kv[int64_t(idx[j]) * p.d_qk + d]);
    }
    out[d] = __float2bfloat16(acc / sum);
  }
  if (p.lse && threadIdx.x == 0) p.lse[t * p.H + h] = mx + logf(sum);
}

}  // namespace

void SparseMlaGenericCuda(const SparseMlaCudaParams& p, cudaStream_t stream) {
  if (p.T == 0 || p.H == 0) return;
  if (p.topk > kMaxTopk) {
    std::fprintf(stderr, "SparseMlaGenericCuda: topk %lld exceeds %d\n", static_cast<long long>(p.topk), kMaxTopk);
    std::abort();
  }
  const size_t smem = static_cast<size_t>(std::max<int64_t>(p.topk, 1)) * sizeof(float);
  SparseMlaGenericKernel<<<static_cast<unsigned>(p.T * p.H), kThreads, smem, stream>>>(p);
  CUDA_CHECK(cudaGetLastError());
}

Status SparseMlaCudaSupports(int64_t d_qk, int64_t d_v, int64_t topk, const char* topk_name) {
  if (d_qk == 576 && d_v == 512) return Status::Ok();  // the wgmma kernel: any topk, any heads
  if (topk < 0 || topk > kMaxTopk) {
    return Unimplemented(std::string("field '") + topk_name + "' = " + std::to_string(topk) +
                         " is not supported by the CUDA sparse MLA kernel for these head sizes (supported: up to " +
                         std::to_string(kMaxTopk) + "; kv_lora_rank 512 + qk_rope_head_dim 64 has no limit)");
  }
  return Status::Ok();
}

}  // namespace indexcache
