#include "kernels/moe_routing_cuda.h"

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <string>

#include "core/cuda_check.h"

namespace indexcache {
namespace {

constexpr int kWarps = 4;  // tokens per block
constexpr unsigned kFull = 0xffffffffu;

__device__ float RankKey(float c) { return c != c ? -INFINITY : c; }

// A candidate of the warp arg-max: `valid` false for lanes with nothing left to offer.
struct Cand {
  bool valid;
  float v;
  int idx;
};

// a beats b: larger value, ties to the lower index (values are NaN-free rank keys).
__device__ bool Beats(const Cand& a, const Cand& b) {
  return a.valid && (!b.valid || a.v > b.v || (a.v == b.v && a.idx < b.idx));
}

// The best candidate of the warp, in every lane. Beats is a total order on (v, idx), so the
// result does not depend on the reduction tree.
__device__ Cand WarpBest(Cand c) {
  for (int off = 16; off > 0; off >>= 1) {
    Cand o;
    o.valid = __shfl_xor_sync(kFull, c.valid, off);
    o.v = __shfl_xor_sync(kFull, c.v, off);
    o.idx = __shfl_xor_sync(kFull, c.idx, off);
    if (Beats(o, c)) c = o;
  }
  return c;
}

__global__ void __launch_bounds__(kWarps * 32)
    MoeRoutingKernel(const float* __restrict__ logits, const float* __restrict__ bias, int64_t T, int E, int n_group,
                     int topk_group, int topk, bool norm, float scaling, int32_t* __restrict__ out_experts,
                     float* __restrict__ out_weights) {
  extern __shared__ float smem[];
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int64_t t = static_cast<int64_t>(blockIdx.x) * kWarps + warp;
  if (t >= T) return;  // the whole warp leaves together; no block-wide barrier follows
  float* score = smem + warp * 2 * E;
  float* key = score + E;
  const float* l = logits + t * E;
  for (int e = lane; e < E; e += 32) {
    // The same expressions as MoeSigmoid / MoeRankKey in moe_routing.h (fp64 sigmoid, see there).
    const float s = static_cast<float>(1.0 / (1.0 + exp(-static_cast<double>(l[e]))));
    score[e] = s;
    key[e] = RankKey(s + (bias ? bias[e] : 0.0f));
  }
  __syncwarp();
  if (n_group > 1) {
    // Lane g rates group g by its two best keys, scanning in index order exactly as the CPU does.
    const int per = E / n_group;
    Cand g{lane < n_group, -INFINITY, lane};
    if (g.valid) {
      float best = -INFINITY, second = -INFINITY;
      for (int i = 0; i < per; ++i) {
        const float c = key[lane * per + i];
        if (c > best) {
          second = best;
          best = c;
        } else if (c > second) {
          second = c;
        }
      }
      g.v = RankKey(best + second);
    }
    bool keep = false;
    for (int i = 0; i < topk_group; ++i) {
      const Cand w = WarpBest(g);
      if (w.idx == lane) {
        keep = true;
        g.valid = false;
      }
    }
    const unsigned kept = __ballot_sync(kFull, keep);
    for (int e = lane; e < E; e += 32) {
      if (!((kept >> (e / per)) & 1u)) key[e] = -INFINITY;
    }
    __syncwarp();
  }
  // Top-k: lane owns experts lane, lane + 32, ...; bit i of `taken` marks lane + 32 i as chosen.
  unsigned taken = 0;
  int mine = 0;  // lane j < topk ends holding the j-th choice
  for (int j = 0; j < topk; ++j) {
    Cand c{false, -INFINITY, 0};
    for (int i = 0, e = lane; e < E; ++i, e += 32) {
      if (taken & (1u << i)) continue;
      const Cand here{true, key[e], e};
      if (Beats(here, c)) c = here;
    }
    const Cand w = WarpBest(c);
    if ((w.idx & 31) == lane) taken |= 1u << (w.idx / 32);
    if (lane == j) mine = w.idx;
  }
  // Weights: the unbiased scores, summed in choice order like the CPU (every lane the same sum).
  float w = lane < topk ? score[mine] : 0.0f;
  float sum = 0.0f;
  for (int j = 0; j < topk; ++j) sum += __shfl_sync(kFull, w, j);
  if (lane < topk) {
    if (norm) w /= (sum + 1e-20f);
    w *= scaling;
    out_experts[t * topk + lane] = mine;
    out_weights[t * topk + lane] = w;
  }
}

}  // namespace

Status MoeRoutingCudaSupports(int64_t E, int64_t n_group, int64_t topk_group, int64_t topk) {
  if (E < 1 || E > 1024) {
    return InvalidArgument("n_routed_experts = " + std::to_string(E) + ": the CUDA MoE router supports 1..1024");
  }
  if (n_group < 1 || n_group > 32 || E % n_group != 0) {
    return InvalidArgument("n_group = " + std::to_string(n_group) +
                           ": the CUDA MoE router needs 1..32 groups dividing n_routed_experts");
  }
  if (topk_group < 1 || topk_group > n_group) {
    return InvalidArgument("topk_group = " + std::to_string(topk_group) + ": must be in 1..n_group");
  }
  if (topk < 1 || topk > 32 || topk > topk_group * (E / n_group)) {
    return InvalidArgument("num_experts_per_tok = " + std::to_string(topk) +
                           ": the CUDA MoE router supports 1..32, at most the experts of topk_group groups");
  }
  return Status::Ok();
}

void MoeRoutingCuda(const MoeRoutingParams& p, cudaStream_t stream) {
  const Status ok = MoeRoutingCudaSupports(p.E, p.n_group, p.topk_group, p.topk);
  if (!ok.ok()) {
    std::fprintf(stderr, "MoeRoutingCuda: %s\n", ok.message().c_str());
    std::abort();
  }
  if (p.T == 0) return;
  const size_t smem = static_cast<size_t>(kWarps) * 2 * p.E * sizeof(float);
  const int64_t blocks = (p.T + kWarps - 1) / kWarps;
  MoeRoutingKernel<<<static_cast<unsigned>(blocks), kWarps * 32, smem, stream>>>(
      p.logits, p.bias, p.T, static_cast<int>(p.E), static_cast<int>(p.n_group), static_cast<int>(p.topk_group),
      static_cast<int>(p.topk), p.norm_topk_prob, p.routed_scaling_factor, p.out_experts, p.out_weights);
  CUDA_CHECK(cudaGetLastError());
}

}  // namespace indexcache
