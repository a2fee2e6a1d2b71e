// The indexer's weight gradients against finite differences of an independent fp64 forward.
#include <cmath>
#include <random>
#include <vector>

#include <gtest/gtest.h>

#include "model/indexer_grad.h"

namespace indexcache {
namespace {

constexpr int64_t kT = 5, kHidden = 10, kQLora = 6, kHI = 3, kD = 8, kRope = 4;

struct Problem {
  ModelConfig c;
  IndexerWeights w;
  Matrix x, q_lat, dq, dk, dw;
  RopeTable rope;

  Problem(bool interleaved, uint32_t seed) {
    c.index_n_heads = kHI;
    c.index_head_dim = kD;
    c.qk_rope_head_dim = kRope;
    c.indexer_rope_interleave = interleaved;
    std::mt19937 rng(seed);
    std::normal_distribution<float> n(0.0f, 1.0f);
    auto rnd = [&](int64_t r, int64_t col) {
      Matrix m(r, col);
      for (int64_t i = 0; i < m.size(); ++i) m.data()[i] = n(rng);
      return m;
    };
    w.wq_b = rnd(kHI * kD, kQLora);
    w.wk = rnd(kD, kHidden);
    w.weights_proj = rnd(kHI, kHidden);
    w.k_norm_weight = Vector(kD);
    w.k_norm_bias = Vector(kD);
    for (int64_t d = 0; d < kD; ++d) {
      w.k_norm_weight(d) = 1.0f + 0.3f * n(rng);
      w.k_norm_bias(d) = 0.3f * n(rng);
    }
    x = rnd(kT, kHidden);
    q_lat = rnd(kT, kQLora);
    dq = rnd(kT, kHI * kD);
    dk = rnd(kT, kD);
    dw = rnd(kT, kHI);
    rope = BuildRopeTable(RopeConfig(), kRope, 3, kT);
  }

  // Independent fp64 forward; returns sum(dq*q) + sum(dk*k) + sum(dw*w).
  double Functional(const IndexerWeights& v) const {
    auto rot = [&](std::vector<double>& head, int64_t t) {
      const int64_t half = kRope / 2;
      for (int64_t i = 0; i < half; ++i) {
        const int64_t a = c.indexer_rope_interleave ? 2 * i : i, b = c.indexer_rope_interleave ? 2 * i + 1 : i + half;
        const double cs = rope.cos[t * half + i], sn = rope.sin[t * half + i];
        const double xa = head[a], xb = head[b];
        head[a] = xa * cs - xb * sn;
        head[b] = xb * cs + xa * sn;
      }
    };
    double f = 0;
    for (int64_t t = 0; t < kT; ++t) {
      for (int64_t h = 0; h < kHI; ++h) {
        std::vector<double> head(kD, 0.0);
        for (int64_t d = 0; d < kD; ++d) {
          for (int64_t i = 0; i < kQLora; ++i) head[d] += double(q_lat(t, i)) * v.wq_b(h * kD + d, i);
        }
        rot(head, t);
        for (int64_t d = 0; d < kD; ++d) f += head[d] * dq(t, h * kD + d);
        double wt = 0;
        for (int64_t i = 0; i < kHidden; ++i) wt += double(x(t, i)) * v.weights_proj(h, i);
        f += wt / std::sqrt(double(kHI)) * dw(t, h);
      }
      std::vector<double> k(kD, 0.0);
      for (int64_t d = 0; d < kD; ++d) {
        for (int64_t i = 0; i < kHidden; ++i) k[d] += double(x(t, i)) * v.wk(d, i);
      }
      double mean = 0, var = 0;
      for (double e : k) mean += e / kD;
      for (double e : k) var += (e - mean) * (e - mean) / kD;
      for (int64_t d = 0; d < kD; ++d) k[d] = (k[d] - mean) / std::sqrt(var + 1e-6) * v.k_norm_weight(d) + v.k_norm_bias(d);
      rot(k, t);
      for (int64_t d = 0; d < kD; ++d) f += k[d] * dk(t, d);
    }
    return f;
  }
};

// Perturbs each element of one weight (in a double copy held as float: the step must be
// representable, so it is relative to the value) and compares with the analytic gradient.
template <typename Get>
void CheckGradient(const Problem& s, const IndexerWeights& base, Get get, const float* analytic, int64_t n, const char* name) {
  for (int64_t i = 0; i < n; ++i) {
    IndexerWeights up = base, down = base;
    const float v = get(const_cast<IndexerWeights&>(base))[i];
    const float h = 1e-2f * std::max(1.0f, std::fabs(v));
    get(up)[i] = v + h;
    get(down)[i] = v - h;
    const double step = double(get(up)[i]) - double(get(down)[i]);
    // The functional is linear or smooth in each weight; central differences are accurate to
    // O(h^2) and the analytic side is fp32.
    const double fd = (s.Functional(up) - s.Functional(down)) / step;
    EXPECT_NEAR(analytic[i], fd, 2e-3 * std::max(1.0, std::fabs(fd))) << name << "[" << i << "]";
  }
}

TEST(IndexerGradTest, WeightGradientsMatchFiniteDifferences) {
  for (bool interleaved : {false, true}) {
    const Problem s(interleaved, interleaved ? 7 : 11);
    const IndexerActivations act = IndexerForward(s.c, s.w, s.x, s.q_lat, s.rope);
    IndexerGrads g = IndexerGrads::ZerosLike(s.w);
    IndexerBackward(s.c, s.w, s.x, s.q_lat, s.rope, act, s.dq, s.dk, s.dw, &g);
    // The forward itself agrees with the independent one.
    const double f = (s.dq.cast<double>().array() * act.q.cast<double>().array()).sum() +
                     (s.dk.cast<double>().array() * act.k.cast<double>().array()).sum() +
                     (s.dw.cast<double>().array() * act.w.cast<double>().array()).sum();
    EXPECT_NEAR(f, s.Functional(s.w), 1e-4 * std::fabs(f));
    CheckGradient(s, s.w, [](IndexerWeights& v) { return v.wq_b.data(); }, g.wq_b.data(), g.wq_b.size(), "wq_b");
    CheckGradient(s, s.w, [](IndexerWeights& v) { return v.wk.data(); }, g.wk.data(), g.wk.size(), "wk");
    CheckGradient(s, s.w, [](IndexerWeights& v) { return v.weights_proj.data(); }, g.weights_proj.data(),
                  g.weights_proj.size(), "weights_proj");
    CheckGradient(s, s.w, [](IndexerWeights& v) { return v.k_norm_weight.data(); }, g.k_norm_weight.data(),
                  g.k_norm_weight.size(), "k_norm.weight");
    CheckGradient(s, s.w, [](IndexerWeights& v) { return v.k_norm_bias.data(); }, g.k_norm_bias.data(),
                  g.k_norm_bias.size(), "k_norm.bias");
  }
}

}  // namespace
}  // namespace indexcache
