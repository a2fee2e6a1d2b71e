// The distillation loss: value against an independent fp64 computation, gradients against
// finite differences (fp64), and the identity that the multi-layer gradient equals the gradient
// of KL(mean teacher || student).
#include <cmath>
#include <random>
#include <tuple>
#include <vector>

#include <gtest/gtest.h>

#include "kernels/distill_loss.h"

namespace indexcache {
namespace {

struct Problem {
  int64_t Tq = 5, L = 9, HI = 3, D = 4, HA = 2, DA = 6, K = 4, served = 2, offset = 4;
  std::vector<double> q, k, w;
  std::vector<std::vector<double>> aq, akv;
  std::vector<int32_t> topk;

  explicit Problem(uint32_t seed) {
    std::mt19937 rng(seed);
    std::normal_distribution<double> n(0.0, 1.0);
    auto fill = [&](std::vector<double>& v, int64_t size) {
      v.resize(size);
      for (double& x : v) x = n(rng);
    };
    fill(q, Tq * HI * D);
    fill(k, L * D);
    fill(w, Tq * HI);
    aq.resize(served);
    akv.resize(served);
    for (int64_t j = 0; j < served; ++j) {
      fill(aq[j], Tq * HA * DA);
      fill(akv[j], L * DA);
    }
    // Top-k rows with padding, a duplicate, and entries past the causal end (all ignored).
    std::uniform_int_distribution<int32_t> pick(0, static_cast<int32_t>(L - 1));
    topk.resize(Tq * K);
    for (int64_t t = 0; t < Tq; ++t) {
      for (int64_t j = 0; j < K; ++j) topk[t * K + j] = pick(rng);
      topk[t * K + K - 1] = -1;
      topk[t * K + 1] = topk[t * K];
    }
  }

  DistillLossParamsT<double> Params(bool sparse) const {
    DistillLossParamsT<double> p;
    p.q = q.data();
    p.k = k.data();
    p.w = w.data();
    p.Tq = Tq;
    p.L = L;
    p.HI = HI;
    p.D = D;
    p.index_scale = 0.7;
    p.query_offset = offset;
    for (int64_t j = 0; j < served; ++j) {
      p.attn_q.push_back(aq[j].data());
      p.attn_kv.push_back(akv[j].data());
    }
    p.HA = HA;
    p.DA = DA;
    p.attn_scale = 0.45;
    p.sparse = sparse;
    p.topk = topk.data();
    p.K = K;
    return p;
  }

  double Loss(bool sparse) const {
    double loss = 0;
    DistillLossParamsT<double> p = Params(sparse);
    p.loss = &loss;
    DistillLossCpu(p);
    return loss;
  }
};

// Independent fp64 evaluation of one query row: the key set, teachers, student.
struct Row {
  std::vector<int64_t> keys;
  std::vector<std::vector<double>> teachers;  // per served layer
  std::vector<double> student_logp;
};

Row EvaluateRow(const Problem& pr, int64_t t, bool sparse, const std::vector<double>& q, const std::vector<double>& k,
                const std::vector<double>& w) {
  Row r;
  const int64_t end = std::min<int64_t>(pr.offset + t + 1, pr.L);
  for (int64_t s = 0; s < end; ++s) {
    bool in = !sparse;
    for (int64_t j = 0; sparse && j < pr.K; ++j) in |= pr.topk[t * pr.K + j] == s;
    if (in) r.keys.push_back(s);
  }
  for (int64_t j = 0; j < pr.served; ++j) {
    std::vector<double> avg(r.keys.size(), 0.0);
    for (int64_t h = 0; h < pr.HA; ++h) {
      std::vector<double> e;
      double z = 0;
      for (int64_t s : r.keys) {
        double dot = 0;
        for (int64_t d = 0; d < pr.DA; ++d) dot += pr.aq[j][(t * pr.HA + h) * pr.DA + d] * pr.akv[j][s * pr.DA + d];
        e.push_back(std::exp(0.45 * dot));
        z += e.back();
      }
      for (size_t i = 0; i < e.size(); ++i) avg[i] += e[i] / z / pr.HA;
    }
    r.teachers.push_back(avg);
  }
  std::vector<double> I;
  double z = 0;
  for (int64_t s : r.keys) {
    double score = 0;
    for (int64_t h = 0; h < pr.HI; ++h) {
      double dot = 0;
      for (int64_t d = 0; d < pr.D; ++d) dot += q[(t * pr.HI + h) * pr.D + d] * k[s * pr.D + d];
      score += w[t * pr.HI + h] * std::max(0.7 * dot, 0.0);
    }
    I.push_back(score);
    z += std::exp(score);
  }
  for (double v : I) r.student_logp.push_back(v - std::log(z));
  return r;
}

TEST(DistillLossTest, LossMatchesIndependentMultiLayerKl) {
  const Problem pr(1);
  for (bool sparse : {false, true}) {
    double want = 0;
    for (int64_t t = 0; t < pr.Tq; ++t) {
      const Row r = EvaluateRow(pr, t, sparse, pr.q, pr.k, pr.w);
      for (const auto& p : r.teachers) {
        for (size_t i = 0; i < p.size(); ++i) want += p[i] * (std::log(p[i]) - r.student_logp[i]) / pr.served;
      }
    }
    EXPECT_NEAR(pr.Loss(sparse), want, 1e-12 * std::max(1.0, std::fabs(want))) << "sparse " << sparse;
    EXPECT_GT(want, 0.0);
  }
}

// Central differences of the loss against the analytic gradient, for every element of q, k, w.
TEST(DistillLossTest, GradientsMatchFiniteDifferencesInDouble) {
  for (bool sparse : {false, true}) {
    Problem pr(2);
    std::vector<double> gq(pr.q.size()), gk(pr.k.size()), gw(pr.w.size());
    DistillLossParamsT<double> p = pr.Params(sparse);
    p.grad_q = gq.data();
    p.grad_k = gk.data();
    p.grad_w = gw.data();
    DistillLossCpu(p);
    const double eps = 1e-6;
    for (auto [vec, grad, name] : {std::tuple<std::vector<double>*, std::vector<double>*, const char*>{&pr.q, &gq, "q"},
                                   {&pr.k, &gk, "k"}, {&pr.w, &gw, "w"}}) {
      for (size_t i = 0; i < vec->size(); ++i) {
        const double saved = (*vec)[i];
        (*vec)[i] = saved + eps;
        const double up = pr.Loss(sparse);
        (*vec)[i] = saved - eps;
        const double down = pr.Loss(sparse);
        (*vec)[i] = saved;
        const double fd = (up - down) / (2 * eps);
        EXPECT_NEAR((*grad)[i], fd, 1e-6 * std::max(1.0, std::fabs(fd))) << name << "[" << i << "] sparse " << sparse;
      }
    }
  }
}

// The gradient of the multi-layer loss equals that of KL(mean_j p_j || P): finite differences
// of an independent implementation of the latter against the analytic multi-layer gradient.
TEST(DistillLossTest, MultiLayerGradientEqualsGradientOfKlToMeanDistribution) {
  Problem pr(3);
  pr.served = 3;
  pr.aq.push_back(pr.aq[0]);
  pr.akv.push_back(pr.akv[1]);
  for (double& x : pr.aq[2]) x *= -0.5;  // a third, different teacher
  const bool sparse = false;
  std::vector<double> gq(pr.q.size()), gk(pr.k.size()), gw(pr.w.size());
  DistillLossParamsT<double> p = pr.Params(sparse);
  p.grad_q = gq.data();
  p.grad_k = gk.data();
  p.grad_w = gw.data();
  DistillLossCpu(p);
  auto kl_to_mean = [&](const std::vector<double>& q, const std::vector<double>& k, const std::vector<double>& w) {
    double loss = 0;
    for (int64_t t = 0; t < pr.Tq; ++t) {
      const Row r = EvaluateRow(pr, t, sparse, q, k, w);
      for (size_t i = 0; i < r.keys.size(); ++i) {
        double mean = 0;
        for (const auto& tp : r.teachers) mean += tp[i] / pr.served;
        loss += mean * (std::log(mean) - r.student_logp[i]);
      }
    }
    return loss;
  };
  const double eps = 1e-6;
  for (size_t i = 0; i < pr.q.size(); ++i) {
    std::vector<double> up = pr.q, down = pr.q;
    up[i] += eps;
    down[i] -= eps;
    const double fd = (kl_to_mean(up, pr.k, pr.w) - kl_to_mean(down, pr.k, pr.w)) / (2 * eps);
    EXPECT_NEAR(gq[i], fd, 1e-6 * std::max(1.0, std::fabs(fd))) << "q[" << i << "]";
  }
  for (size_t i = 0; i < pr.w.size(); ++i) {
    std::vector<double> up = pr.w, down = pr.w;
    up[i] += eps;
    down[i] -= eps;
    const double fd = (kl_to_mean(pr.q, pr.k, up) - kl_to_mean(pr.q, pr.k, down)) / (2 * eps);
    EXPECT_NEAR(gw[i], fd, 1e-6 * std::max(1.0, std::fabs(fd))) << "w[" << i << "]";
  }
}

TEST(DistillLossTest, GradientsAccumulateAndFloatMatchesDouble) {
  const Problem pr(4);
  std::vector<double> gq(pr.q.size(), 0.0);
  DistillLossParamsT<double> p = pr.Params(true);
  p.grad_q = gq.data();
  DistillLossCpu(p);
  const std::vector<double> once = gq;
  DistillLossCpu(p);
  for (size_t i = 0; i < gq.size(); ++i) EXPECT_DOUBLE_EQ(gq[i], 2 * once[i]);

  // The float instantiation agrees with double to float precision.
  auto to_f = [](const std::vector<double>& v) { return std::vector<float>(v.begin(), v.end()); };
  const std::vector<float> q = to_f(pr.q), k = to_f(pr.k), w = to_f(pr.w);
  std::vector<std::vector<float>> aq, akv;
  for (int64_t j = 0; j < pr.served; ++j) {
    aq.push_back(to_f(pr.aq[j]));
    akv.push_back(to_f(pr.akv[j]));
  }
  DistillLossParamsT<float> f;
  f.q = q.data();
  f.k = k.data();
  f.w = w.data();
  f.Tq = pr.Tq;
  f.L = pr.L;
  f.HI = pr.HI;
  f.D = pr.D;
  f.index_scale = 0.7f;
  f.query_offset = pr.offset;
  for (int64_t j = 0; j < pr.served; ++j) {
    f.attn_q.push_back(aq[j].data());
    f.attn_kv.push_back(akv[j].data());
  }
  f.HA = pr.HA;
  f.DA = pr.DA;
  f.attn_scale = 0.45f;
  f.sparse = true;
  f.topk = pr.topk.data();
  f.K = pr.K;
  std::vector<float> fq(q.size(), 0.0f);
  double loss = 0;
  f.loss = &loss;
  f.grad_q = fq.data();
  DistillLossCpu(f);
  EXPECT_NEAR(loss, pr.Loss(true), 1e-5 * std::fabs(loss));
  for (size_t i = 0; i < fq.size(); ++i) EXPECT_NEAR(fq[i], once[i], 1e-5 * std::max(1.0, std::fabs(once[i])));
}

}  // namespace
}  // namespace indexcache
