// The backend student (model/indexer_student.h) on the CPU backend against the Eigen reference
// (model/indexer_grad.h, itself checked against finite differences).
#include <cmath>
#include <random>

#include <gtest/gtest.h>

#include "core/test_util.h"
#include "model/indexer_grad.h"
#include "model/indexer_student.h"

namespace indexcache {
namespace {

TEST(IndexerStudentTest, CpuBackendMatchesEigenReference) {
  for (bool interleaved : {false, true}) {
    ModelConfig c;
    c.index_n_heads = 3;
    c.index_head_dim = 16;
    c.qk_rope_head_dim = 8;
    c.indexer_rope_interleave = interleaved;
    const int64_t T = 17, hidden = 23, q_lora = 11;
    std::mt19937 rng(5);
    std::normal_distribution<float> n(0.0f, 1.0f);
    auto rnd = [&](int64_t r, int64_t col) {
      Matrix m(r, col);
      for (int64_t i = 0; i < m.size(); ++i) m.data()[i] = n(rng);
      return m;
    };
    IndexerWeights w;
    w.wq_b = rnd(c.index_n_heads * c.index_head_dim, q_lora);
    w.wk = rnd(c.index_head_dim, hidden);
    w.weights_proj = rnd(c.index_n_heads, hidden);
    w.k_norm_weight = Vector::Constant(c.index_head_dim, 1.1f);
    w.k_norm_bias = Vector::Constant(c.index_head_dim, -0.2f);
    Matrix x = rnd(T, hidden), q_lat = rnd(T, q_lora), dq = rnd(T, c.index_n_heads * c.index_head_dim),
           dk = rnd(T, c.index_head_dim), dw = rnd(T, c.index_n_heads);
    const RopeTable rope = BuildRopeTable(RopeConfig(), c.qk_rope_head_dim, 0, T);

    const IndexerActivations ref = IndexerForward(c, w, x, q_lat, rope);
    IndexerGrads ref_g = IndexerGrads::ZerosLike(w);
    IndexerBackward(c, w, x, q_lat, rope, ref, dq, dk, dw, &ref_g);

    auto be = MakeCpuBackend();
    auto view = [&](Matrix& m) { return be->WeightF32(m.data(), {m.rows(), m.cols()}); };
    auto vview = [&](Vector& v) { return be->WeightF32(v.data(), {v.size()}); };
    StudentParams p{view(w.wq_b), view(w.wk), vview(w.k_norm_weight), vview(w.k_norm_bias), view(w.weights_proj)};
    const Tensor xt = view(x), qt = view(q_lat);
    const StudentActivations act = StudentForward(*be, c, p, xt, qt, rope);
    EXPECT_LE(RelL2(act.q.data<float>(), ref.q.data(), ref.q.size()), 1e-6);
    EXPECT_LE(RelL2(act.k.data<float>(), ref.k.data(), ref.k.size()), 1e-6);
    EXPECT_LE(RelL2(act.w.data<float>(), ref.w.data(), ref.w.size()), 1e-6);

    StudentParams g{be->Alloc(DType::kF32, {w.wq_b.rows(), w.wq_b.cols()}), be->Alloc(DType::kF32, {w.wk.rows(), w.wk.cols()}),
                    be->Alloc(DType::kF32, {c.index_head_dim}), be->Alloc(DType::kF32, {c.index_head_dim}),
                    be->Alloc(DType::kF32, {w.weights_proj.rows(), w.weights_proj.cols()})};
    Tensor dqt = be->Alloc(DType::kF32, {T, dq.cols()}), dkt = be->Alloc(DType::kF32, {T, dk.cols()});
    std::copy(dq.data(), dq.data() + dq.size(), dqt.data<float>());
    std::copy(dk.data(), dk.data() + dk.size(), dkt.data<float>());
    StudentBackward(*be, c, p, xt, qt, rope, act, &dqt, &dkt, view(dw), &g);
    EXPECT_LE(RelL2(g.wq_b.data<float>(), ref_g.wq_b.data(), ref_g.wq_b.size()), 1e-5);
    EXPECT_LE(RelL2(g.wk.data<float>(), ref_g.wk.data(), ref_g.wk.size()), 1e-5);
    EXPECT_LE(RelL2(g.weights_proj.data<float>(), ref_g.weights_proj.data(), ref_g.weights_proj.size()), 1e-5);
    EXPECT_LE(RelL2(g.k_norm_weight.data<float>(), ref_g.k_norm_weight.data(), ref_g.k_norm_weight.size()), 1e-5);
    EXPECT_LE(RelL2(g.k_norm_bias.data<float>(), ref_g.k_norm_bias.data(), ref_g.k_norm_bias.size()), 1e-5);
  }
}

}  // namespace
}  // namespace indexcache
