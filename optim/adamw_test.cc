// AdamW against an independent fp64 implementation of torch.optim.AdamW's formulas, several
// steps with a varying learning rate; decoupled weight decay; bias correction; the no-decay
// group; bitwise determinism; state export/import (in memory and through a safetensors file)
// continuing bitwise like an uninterrupted run; validation.
#include "optim/adamw.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "core/safetensors.h"
#include "core/test_util.h"
#include "gtest/gtest.h"
#include "kernels/tolerances.h"

namespace indexcache {
namespace {

Tensor RandomTensor(const Shape& shape, uint32_t seed, float stddev = 1.f) {
  Tensor t = Tensor::Zeros(DType::kF32, shape);
  std::mt19937 rng(seed);
  std::normal_distribution<float> normal(0.f, stddev);
  for (int64_t i = 0; i < t.numel(); ++i) t.data<float>()[i] = normal(rng);
  return t;
}

Tensor Copy(const Tensor& t) {
  Tensor c = Tensor::Zeros(t.dtype(), t.shape());
  if (t.nbytes() > 0) std::memcpy(c.raw(), t.raw(), t.nbytes());
  return c;
}

NamedTensors CopyAll(const NamedTensors& ts) {
  NamedTensors out;
  for (const auto& [name, t] : ts) out.emplace_back(name, Copy(t));
  return out;
}

bool BitwiseEqual(const Tensor& a, const Tensor& b) {
  return a.dtype() == b.dtype() && a.shape() == b.shape() && std::memcmp(a.raw(), b.raw(), a.nbytes()) == 0;
}

bool BitwiseEqual(const std::vector<float>& a, const std::vector<float>& b) {
  return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0;
}

// Indexer-shaped parameters: odd sizes, one large enough for the multi-threaded path, and a norm
// weight and bias for the no-decay group.
NamedTensors MakeParams(uint32_t seed) {
  NamedTensors params;
  params.emplace_back("layers.0.indexer.wq_b.weight", RandomTensor({17, 15}, seed + 1));
  params.emplace_back("layers.0.indexer.wk.weight", RandomTensor({127}, seed + 2));
  params.emplace_back("layers.0.indexer.k_norm.weight", RandomTensor({281}, seed + 3));
  params.emplace_back("layers.0.indexer.k_norm.bias", RandomTensor({281}, seed + 4));
  params.emplace_back("layers.0.indexer.weights_proj.weight", RandomTensor({100003}, seed + 5));
  params.emplace_back("layers.1.indexer.wk.weight", RandomTensor({313, 1031}, seed + 6));  // 322703
  return params;
}

// Gradients of step `step`: a different random draw every step, scales differing by parameter.
std::vector<std::vector<float>> MakeGrads(const NamedTensors& params, int64_t step, uint32_t seed) {
  std::vector<std::vector<float>> grads;
  for (size_t i = 0; i < params.size(); ++i) {
    std::mt19937 rng(seed * 7919u + static_cast<uint32_t>(step) * 104729u + static_cast<uint32_t>(i));
    std::normal_distribution<float> normal(0.f, 0.1f * (i + 1));
    std::vector<float> g(params[i].second.numel());
    for (float& x : g) x = normal(rng);
    grads.push_back(std::move(g));
  }
  return grads;
}

std::vector<FloatSpan> Spans(std::vector<std::vector<float>>* grads) {
  std::vector<FloatSpan> spans;
  for (auto& g : *grads) spans.push_back({g.data(), static_cast<int64_t>(g.size())});
  return spans;
}

double StepLr(int64_t step) { return 1e-2 * (1.0 + 0.5 * std::sin(0.7 * step)); }

// torch.optim.AdamW written out in fp64, independently of optim/adamw_update.h.
struct ReferenceAdamW {
  double beta1, beta2, eps;
  std::vector<double> wd;  // per parameter
  std::vector<std::vector<double>> p, m, v;
  int64_t t = 0;

  ReferenceAdamW(const NamedTensors& params, const AdamWOptions& o) : beta1(o.beta1), beta2(o.beta2), eps(o.eps) {
    for (const auto& [name, tensor] : params) {
      wd.push_back(o.no_decay && o.no_decay(name) ? 0.0 : o.weight_decay);
      const float* d = tensor.data<float>();
      p.emplace_back(d, d + tensor.numel());
      m.emplace_back(tensor.numel(), 0.0);
      v.emplace_back(tensor.numel(), 0.0);
    }
  }

  void Step(const std::vector<std::vector<float>>& grads, double lr) {
    ++t;
    for (size_t k = 0; k < p.size(); ++k) {
      for (size_t i = 0; i < p[k].size(); ++i) {
        const double g = grads[k][i];
        p[k][i] -= lr * wd[k] * p[k][i];
        m[k][i] = beta1 * m[k][i] + (1 - beta1) * g;
        v[k][i] = beta2 * v[k][i] + (1 - beta2) * g * g;
        const double m_hat = m[k][i] / (1 - std::pow(beta1, t));
        const double v_hat = v[k][i] / (1 - std::pow(beta2, t));
        p[k][i] -= lr * m_hat / (std::sqrt(v_hat) + eps);
      }
    }
  }
};

AdamWOptions TestOptions() {
  AdamWOptions o;
  o.beta1 = 0.9;
  o.beta2 = 0.95;
  o.eps = 1e-8;
  o.weight_decay = 0.1;
  o.no_decay = IsNormOrBias;
  return o;
}

TEST(AdamWTest, MatchesFp64ReferenceOverSeveralSteps) {
  const NamedTensors init = MakeParams(100);
  const AdamWOptions options = TestOptions();
  StatusOr<AdamW> opt = AdamW::Create(CopyAll(init), options);
  ASSERT_TRUE(opt.ok()) << opt.status().ToString();
  ReferenceAdamW ref(init, options);

  constexpr int kSteps = 12;
  for (int64_t step = 0; step < kSteps; ++step) {
    std::vector<std::vector<float>> grads = MakeGrads(init, step, 1);
    ref.Step(grads, StepLr(step));
    opt->Step(Spans(&grads), StepLr(step));
  }
  EXPECT_EQ(opt->step(), kSteps);
  for (size_t k = 0; k < init.size(); ++k) {
    const std::string& name = init[k].first;
    const float* p = opt->params()[k].second.data<float>();
    EXPECT_LE(RelL2(p, ref.p[k].data(), ref.p[k].size()), kRelL2TolF32) << name;
    EXPECT_LE(RelL2(opt->exp_avg(k).data(), ref.m[k].data(), ref.m[k].size()), kRelL2TolF32) << name;
    EXPECT_LE(RelL2(opt->exp_avg_sq(k).data(), ref.v[k].data(), ref.v[k].size()), kRelL2TolF32) << name;
    // Elementwise too: each step rounds a weight about twice in fp32, so after kSteps steps it
    // is within ~kSteps ulp (2^-23 relative) of the fp64 weight, plus far smaller update errors.
    double max_rel = 0.0;
    for (size_t i = 0; i < ref.p[k].size(); ++i) {
      max_rel = std::max(max_rel, std::abs(p[i] - ref.p[k][i]) / std::max(1.0, std::abs(ref.p[k][i])));
    }
    EXPECT_LE(max_rel, kSteps * std::ldexp(1.0, -23)) << name;
    // The parameters really moved.
    EXPECT_GT(RelL2(p, init[k].second.data<float>(), init[k].second.numel()), 1e-3) << name;
  }
}

TEST(AdamWTest, UpdatesCallerStorageInPlace) {
  NamedTensors params = MakeParams(200);
  const Tensor before = Copy(params[1].second);
  StatusOr<AdamW> opt = AdamW::Create(params, TestOptions());  // shares storage
  ASSERT_TRUE(opt.ok());
  std::vector<std::vector<float>> grads = MakeGrads(params, 0, 2);
  opt->Step(Spans(&grads), 1e-2);
  EXPECT_EQ(params[1].second.raw(), opt->params()[1].second.raw());
  EXPECT_FALSE(BitwiseEqual(params[1].second, before));
}

TEST(AdamWTest, WeightDecayIsDecoupled) {
  const double lr = 0.05, wd = 0.3;
  AdamWOptions options;
  options.weight_decay = wd;
  const NamedTensors init = MakeParams(300);

  // Zero gradient: the Adam term vanishes and each step shrinks the weight by exactly lr*wd*p.
  {
    StatusOr<AdamW> opt = AdamW::Create(CopyAll(init), options);
    ASSERT_TRUE(opt.ok());
    std::vector<std::vector<float>> zeros;
    for (const auto& [name, t] : init) zeros.emplace_back(t.numel(), 0.f);
    std::vector<std::vector<double>> want;
    for (const auto& [name, t] : init) want.emplace_back(t.data<float>(), t.data<float>() + t.numel());
    for (int step = 0; step < 5; ++step) {
      // What this step's parameters started from.
      std::vector<std::vector<float>> start;
      for (const auto& [name, t] : opt->params()) start.emplace_back(t.data<float>(), t.data<float>() + t.numel());
      opt->Step(Spans(&zeros), lr);
      for (size_t k = 0; k < init.size(); ++k) {
        const float* p = opt->params()[k].second.data<float>();
        for (size_t i = 0; i < start[k].size(); ++i) {
          const double p0 = start[k][i];
          const double exact = p0 - lr * wd * p0;
          // fp32: one rounding of the decay factor, one of the product.
          ASSERT_NEAR(p[i], exact, 2 * std::abs(p0) * std::ldexp(1.0, -24)) << init[k].first << "[" << i << "]";
          want[k][i] -= lr * wd * want[k][i];
        }
        for (float x : opt->exp_avg(k)) ASSERT_EQ(x, 0.f);
        for (float x : opt->exp_avg_sq(k)) ASSERT_EQ(x, 0.f);
      }
    }
    for (size_t k = 0; k < init.size(); ++k) {
      EXPECT_LE(RelL2(opt->params()[k].second.data<float>(), want[k].data(), want[k].size()), 1e-6) << init[k].first;
    }
  }

  // Non-zero gradient: the decay does not enter m and v (as L2 regularisation would), and the
  // parameters differ from a run without decay by lr*wd*p.
  {
    AdamWOptions no_wd = options;
    no_wd.weight_decay = 0.0;
    StatusOr<AdamW> with = AdamW::Create(CopyAll(init), options);
    StatusOr<AdamW> without = AdamW::Create(CopyAll(init), no_wd);
    ASSERT_TRUE(with.ok() && without.ok());
    std::vector<std::vector<float>> grads = MakeGrads(init, 0, 3);
    with->Step(Spans(&grads), lr);
    without->Step(Spans(&grads), lr);
    for (size_t k = 0; k < init.size(); ++k) {
      EXPECT_TRUE(BitwiseEqual(with->exp_avg(k), without->exp_avg(k))) << init[k].first;
      EXPECT_TRUE(BitwiseEqual(with->exp_avg_sq(k), without->exp_avg_sq(k))) << init[k].first;
      const float* a = with->params()[k].second.data<float>();
      const float* b = without->params()[k].second.data<float>();
      const float* p0 = init[k].second.data<float>();
      for (int64_t i = 0; i < init[k].second.numel(); ++i) {
        // Two fp32 roundings of a weight apart at most.
        const double tol = 8 * std::max(1.0, std::abs(static_cast<double>(p0[i]))) * std::ldexp(1.0, -24);
        ASSERT_NEAR(a[i] - b[i], -lr * wd * p0[i], tol) << init[k].first << "[" << i << "]";
      }
    }
  }
}

TEST(AdamWTest, NoDecayGroup) {
  EXPECT_TRUE(IsNormOrBias("layers.0.indexer.k_norm.weight"));
  EXPECT_TRUE(IsNormOrBias("layers.0.indexer.k_norm.bias"));
  EXPECT_TRUE(IsNormOrBias("model.norm.weight"));
  EXPECT_TRUE(IsNormOrBias("model.layers.2.input_layernorm.weight"));
  EXPECT_TRUE(IsNormOrBias("bias"));
  EXPECT_FALSE(IsNormOrBias("layers.0.indexer.wk.weight"));
  EXPECT_FALSE(IsNormOrBias("layers.0.indexer.weights_proj.weight"));
  EXPECT_FALSE(IsNormOrBias("layers.0.biased.weight"));

  const NamedTensors init = MakeParams(400);
  StatusOr<AdamW> opt = AdamW::Create(CopyAll(init), TestOptions());
  ASSERT_TRUE(opt.ok());
  std::vector<std::vector<float>> zeros;
  for (const auto& [name, t] : init) zeros.emplace_back(t.numel(), 0.f);
  opt->Step(Spans(&zeros), 0.1);
  for (size_t k = 0; k < init.size(); ++k) {
    const bool no_decay = IsNormOrBias(init[k].first);
    EXPECT_EQ(opt->weight_decay(k), no_decay ? 0.0 : 0.1) << init[k].first;
    // Zero gradient and no decay: bitwise unchanged.
    EXPECT_EQ(BitwiseEqual(opt->params()[k].second, init[k].second), no_decay) << init[k].first;
  }
}

TEST(AdamWTest, BiasCorrection) {
  // Without decay, step 1 moves every weight by lr * g / (|g| + eps): about lr against the
  // gradient's sign whatever the betas (uncorrected, it would be lr * (1-b1) / sqrt(1-b2)).
  // With a constant gradient every later step does the same.
  for (double beta2 : {0.95, 0.999}) {
    AdamWOptions options;
    options.beta1 = 0.8;
    options.beta2 = beta2;
    options.weight_decay = 0.0;
    NamedTensors params;
    params.emplace_back("w", RandomTensor({281}, 500));
    const Tensor init = Copy(params[0].second);
    StatusOr<AdamW> opt = AdamW::Create(params, options);
    ASSERT_TRUE(opt.ok());
    std::vector<std::vector<float>> grads = {std::vector<float>(281)};
    std::mt19937 rng(7);
    std::uniform_real_distribution<float> mag(0.01f, 2.f);
    for (size_t i = 0; i < 281; ++i) grads[0][i] = (i % 2 ? -1.f : 1.f) * mag(rng);
    const double lr = 1e-3;
    for (int step = 1; step <= 3; ++step) {
      opt->Step(Spans(&grads), lr);
      const float* p = opt->params()[0].second.data<float>();
      for (size_t i = 0; i < 281; ++i) {
        const double g = grads[0][i];
        const double want = init.data<float>()[i] - step * lr * g / (std::abs(g) + options.eps);
        ASSERT_NEAR(p[i], want, 1e-6) << "beta2 " << beta2 << " step " << step << " element " << i;
      }
    }
  }
}

TEST(AdamWTest, StepIsBitwiseDeterministic) {
  const NamedTensors init = MakeParams(600);
  NamedTensors results[2];
  for (NamedTensors& result : results) {
    StatusOr<AdamW> opt = AdamW::Create(CopyAll(init), TestOptions());
    ASSERT_TRUE(opt.ok());
    for (int64_t step = 0; step < 4; ++step) {
      std::vector<std::vector<float>> grads = MakeGrads(init, step, 4);
      opt->Step(Spans(&grads), StepLr(step));
    }
    result = opt->params();
  }
  for (size_t k = 0; k < init.size(); ++k) EXPECT_TRUE(BitwiseEqual(results[0][k].second, results[1][k].second));
}

// Runs `steps` steps starting at `first_step` (gradients and lr depend on the step number).
void RunSteps(AdamW* opt, const NamedTensors& shapes, int64_t first_step, int64_t steps) {
  for (int64_t step = first_step; step < first_step + steps; ++step) {
    std::vector<std::vector<float>> grads = MakeGrads(shapes, step, 5);
    opt->Step(Spans(&grads), StepLr(step));
  }
}

void ExpectSameOptimizer(const AdamW& a, const AdamW& b) {
  ASSERT_EQ(a.step(), b.step());
  ASSERT_EQ(a.num_params(), b.num_params());
  for (size_t k = 0; k < a.num_params(); ++k) {
    EXPECT_TRUE(BitwiseEqual(a.params()[k].second, b.params()[k].second)) << a.params()[k].first;
    EXPECT_TRUE(BitwiseEqual(a.exp_avg(k), b.exp_avg(k))) << a.params()[k].first;
    EXPECT_TRUE(BitwiseEqual(a.exp_avg_sq(k), b.exp_avg_sq(k))) << a.params()[k].first;
  }
}

TEST(AdamWTest, StateRoundTripContinuesBitwise) {
  const NamedTensors init = MakeParams(700);
  StatusOr<AdamW> full = AdamW::Create(CopyAll(init), TestOptions());
  ASSERT_TRUE(full.ok());
  RunSteps(&*full, init, 0, 10);

  StatusOr<AdamW> first = AdamW::Create(CopyAll(init), TestOptions());
  ASSERT_TRUE(first.ok());
  RunSteps(&*first, init, 0, 4);
  const AdamWState state = first->ExportState();
  EXPECT_EQ(state.step, 4);
  ASSERT_EQ(state.tensors.size(), 2 * init.size());
  for (size_t k = 0; k < init.size(); ++k) {
    EXPECT_EQ(state.tensors[2 * k].first, init[k].first + ".exp_avg");
    EXPECT_EQ(state.tensors[2 * k + 1].first, init[k].first + ".exp_avg_sq");
    EXPECT_EQ(state.tensors[2 * k].second.shape(), init[k].second.shape());
    EXPECT_EQ(state.tensors[2 * k].second.dtype(), DType::kF32);
  }

  // A fresh optimiser on the checkpointed parameters, with the state imported.
  StatusOr<AdamW> resumed = AdamW::Create(CopyAll(first->params()), TestOptions());
  ASSERT_TRUE(resumed.ok());
  Status st = resumed->ImportState(state);
  ASSERT_TRUE(st.ok()) << st.ToString();
  EXPECT_EQ(resumed->step(), 4);
  RunSteps(&*resumed, init, 4, 6);
  ExpectSameOptimizer(*full, *resumed);

  // The export is a copy: stepping on does not change it.
  const AdamWState again = first->ExportState();
  RunSteps(&*first, init, 4, 1);
  for (size_t i = 0; i < state.tensors.size(); ++i) {
    EXPECT_TRUE(BitwiseEqual(state.tensors[i].second, again.tensors[i].second));
  }
}

TEST(AdamWTest, StateFileRoundTripContinuesBitwise) {
  const NamedTensors init = MakeParams(800);
  StatusOr<AdamW> full = AdamW::Create(CopyAll(init), TestOptions());
  ASSERT_TRUE(full.ok());
  RunSteps(&*full, init, 0, 7);

  StatusOr<AdamW> first = AdamW::Create(CopyAll(init), TestOptions());
  ASSERT_TRUE(first.ok());
  RunSteps(&*first, init, 0, 3);
  const std::string path = ::testing::TempDir() + "/adamw_state_test.safetensors";
  Status st = SaveAdamWState(*first, path);
  ASSERT_TRUE(st.ok()) << st.ToString();

  StatusOr<AdamW> resumed = AdamW::Create(CopyAll(first->params()), TestOptions());
  ASSERT_TRUE(resumed.ok());
  st = LoadAdamWState(path, &*resumed);
  ASSERT_TRUE(st.ok()) << st.ToString();
  EXPECT_EQ(resumed->step(), 3);
  RunSteps(&*resumed, init, 3, 4);
  ExpectSameOptimizer(*full, *resumed);

  // A file without the step is refused, naming the file.
  const std::string bare = ::testing::TempDir() + "/adamw_state_bare.safetensors";
  ASSERT_TRUE(WriteSafetensors(bare, first->ExportState().tensors).ok());
  st = LoadAdamWState(bare, &*resumed);
  EXPECT_FALSE(st.ok());
  EXPECT_NE(st.message().find(bare), std::string::npos) << st.message();
  std::remove(path.c_str());
  std::remove(bare.c_str());
}

TEST(AdamWTest, ImportRejectsBadStateAndChangesNothing) {
  const NamedTensors init = MakeParams(900);
  StatusOr<AdamW> opt = AdamW::Create(CopyAll(init), TestOptions());
  ASSERT_TRUE(opt.ok());
  RunSteps(&*opt, init, 0, 2);
  const AdamWState good = opt->ExportState();

  auto expect_error = [&](const AdamWState& bad, const std::string& needle) {
    StatusOr<AdamW> target = AdamW::Create(CopyAll(init), TestOptions());
    ASSERT_TRUE(target.ok());
    RunSteps(&*target, init, 0, 1);
    const AdamWState before = target->ExportState();
    Status st = target->ImportState(bad);
    ASSERT_FALSE(st.ok()) << needle;
    EXPECT_NE(st.message().find(needle), std::string::npos) << st.message();
    EXPECT_EQ(target->step(), before.step);
    const AdamWState after = target->ExportState();
    for (size_t i = 0; i < before.tensors.size(); ++i) {
      EXPECT_TRUE(BitwiseEqual(before.tensors[i].second, after.tensors[i].second)) << needle;
    }
  };

  AdamWState missing = good;
  missing.tensors.pop_back();
  expect_error(missing, "missing tensor 'layers.1.indexer.wk.weight.exp_avg_sq'");

  AdamWState wrong_shape = good;
  wrong_shape.tensors[0].second = Tensor::Zeros(DType::kF32, {15, 17});
  expect_error(wrong_shape, "has shape");

  AdamWState wrong_dtype = good;
  wrong_dtype.tensors[2].second = Tensor::Zeros(DType::kF64, {127});
  expect_error(wrong_dtype, "expected F32");

  AdamWState unknown = good;
  unknown.tensors.emplace_back("layers.9.indexer.wk.weight.exp_avg", Tensor::Zeros(DType::kF32, {3}));
  expect_error(unknown, "matches no parameter");

  AdamWState twice = good;
  twice.tensors.push_back(good.tensors[1]);
  expect_error(twice, "appears twice");

  AdamWState negative = good;
  negative.step = -1;
  expect_error(negative, "step");

  // Unrelated tensors are ignored.
  AdamWState extra = good;
  extra.tensors.emplace_back("layers.0.indexer.wk.weight", Tensor::Zeros(DType::kF32, {127}));
  StatusOr<AdamW> target = AdamW::Create(CopyAll(init), TestOptions());
  ASSERT_TRUE(target.ok());
  EXPECT_TRUE(target->ImportState(extra).ok());
}

TEST(AdamWTest, CreateValidates) {
  auto expect_error = [](NamedTensors params, AdamWOptions o, const std::string& needle) {
    StatusOr<AdamW> opt = AdamW::Create(std::move(params), std::move(o));
    ASSERT_FALSE(opt.ok()) << needle;
    EXPECT_EQ(opt.status().code(), StatusCode::kInvalidArgument);
    EXPECT_NE(opt.status().message().find(needle), std::string::npos) << opt.status().message();
  };
  NamedTensors ok;
  ok.emplace_back("w", RandomTensor({5}, 1));
  AdamWOptions o;
  o.beta1 = 1.0;
  expect_error(ok, o, "beta1");
  o = {};
  o.beta2 = -0.1;
  expect_error(ok, o, "beta2");
  o = {};
  o.eps = 0;
  expect_error(ok, o, "eps");
  o = {};
  o.weight_decay = -1;
  expect_error(ok, o, "weight_decay");
  o = {};
  o.weight_decay = NAN;
  expect_error(ok, o, "weight_decay");

  NamedTensors dup = ok;
  dup.emplace_back("w", RandomTensor({5}, 2));
  expect_error(dup, {}, "appears twice");
  NamedTensors f64;
  f64.emplace_back("w", Tensor::Zeros(DType::kF64, {5}));
  expect_error(f64, {}, "expected F32");
  NamedTensors unnamed;
  unnamed.emplace_back("", RandomTensor({5}, 3));
  expect_error(unnamed, {}, "empty name");

  EXPECT_TRUE(AdamW::Create(ok).ok());
  EXPECT_TRUE(AdamW::Create({}).ok());  // nothing to train is allowed
}

}  // namespace
}  // namespace indexcache
