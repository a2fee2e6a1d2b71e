// The pattern search against brute force on small CPU models:
//  - a prefix-cached score equals a full forward of the same pattern (to kSearchLossRelTol),
//    before and after a commit;
//  - step 1 picks the argmin of explicitly evaluated single flips (ties: the lower layer), so a
//    target of one Shared layer is the exhaustive search; later steps follow the explicit greedy;
//  - a search stopped after a step and resumed from its JSON writes the same JSON;
//  - refine never raises the loss; budget mode stays within its budget;
//  - layers without indexer weights are only ever Shared; impossible requests are errors.
#include "search/pattern_search.h"

#include <cmath>
#include <map>
#include <random>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "kernels/tolerances.h"
#include "model/lm_loss.h"
#include "model/random_weights.h"
#include "search/prefix_cache.h"
#include "search/search_record.h"

namespace indexcache {
namespace {

// The gentle fixture's shapes (top-k 32) with `layers` dense layers and random weights.
DsaModel RandomModel(int layers, uint64_t seed) {
  auto config = LoadModelConfig("tests/data/dsv32_gentle_bf16");
  EXPECT_TRUE(config.ok()) << config.status().message();
  config->num_layers = layers;
  config->layer_is_moe.assign(layers, false);
  config->pattern = IndexPattern::AllFull(layers);
  auto model = DsaModel::FromParts(*config, RandomModelWeights(*config, seed), IndexPattern::AllFull(layers),
                                   std::shared_ptr<Backend>(MakeCpuBackend()));
  EXPECT_TRUE(model.ok()) << model.status().message();
  return std::move(*model);
}

std::vector<std::vector<int32_t>> RandomSequences(int count, int length, int64_t vocab, uint32_t seed) {
  std::mt19937 rng(seed);
  std::vector<std::vector<int32_t>> seqs(count, std::vector<int32_t>(length));
  for (auto& s : seqs) {
    for (auto& t : s) t = static_cast<int32_t>(rng() % vocab);
  }
  return seqs;
}

// Mean next-token loss of `pattern` by full forwards through the logits: independent of the cache.
double FullLoss(const DsaModel& model, const std::vector<std::vector<int32_t>>& seqs, const std::string& pattern) {
  auto p = IndexPattern::Parse(pattern, static_cast<int>(model.config().num_layers));
  EXPECT_TRUE(p.ok());
  LossSum total;
  for (const auto& s : seqs) {
    ForwardOptions opt;
    opt.pattern = &*p;
    auto r = model.Forward(s, opt);
    EXPECT_TRUE(r.ok()) << r.status().message();
    total.Add(NextTokenLoss(r->logits, s));
  }
  return total.mean();
}

double Mean(const std::vector<double>& per_seq, const std::vector<std::vector<int32_t>>& seqs) {
  double sum = 0;
  for (double v : per_seq) sum += v;
  return sum / (seqs.size() * (seqs[0].size() - 1));
}

std::string Flip(std::string p, int layer, char c) {
  p[layer] = c;
  return p;
}

struct SearchRun {
  SearchRecord record;
  std::vector<std::string> saved;  // every JSON the search wrote
};

SearchRun Search(const DsaModel& model, const std::vector<std::vector<int32_t>>& seqs, SearchOptions opt,
           SearchRecord start = {}) {
  auto comm = Communicator::Create(nullptr, nullptr);
  SearchRun run;
  run.record = std::move(start);
  if (run.record.settings.is_null()) run.record.settings = {{"test", true}};
  const Status s = RunPatternSearch(
      model, seqs, static_cast<int64_t>(seqs.size()), opt, *comm, &run.record,
      [&](const SearchRecord& r) {
        run.saved.push_back(r.ToJson().dump(2));
        return Status::Ok();
      },
      [](const SearchProgress&) {});
  EXPECT_TRUE(s.ok()) << s.message();
  return run;
}

TEST(PrefixCache, CachedScoresEqualFullForwards) {
  const DsaModel model = RandomModel(5, 11);
  const auto seqs = RandomSequences(2, 48, model.config().vocab_size, 3);
  PrefixCache cache(&model, seqs);
  const std::string all = "FFFFF";
  auto base = cache.Commit(*IndexPattern::Parse(all, 5), 0);
  ASSERT_TRUE(base.ok()) << base.status().message();
  EXPECT_NEAR(Mean(*base, seqs), FullLoss(model, seqs, all), kSearchLossRelTol * FullLoss(model, seqs, all));
  for (int l = 1; l < 5; ++l) {
    const std::string p = Flip(all, l, 'S');
    auto got = cache.Score(*IndexPattern::Parse(p, 5), l);
    ASSERT_TRUE(got.ok()) << got.status().message();
    const double want = FullLoss(model, seqs, p);
    EXPECT_NEAR(Mean(*got, seqs), want, kSearchLossRelTol * want) << p;
  }
  // After committing FFSFF (from layer 2), candidates read refreshed activations and indices.
  ASSERT_TRUE(cache.Commit(*IndexPattern::Parse("FFSFF", 5), 2).ok());
  for (const auto& [p, start] : std::vector<std::pair<std::string, int>>{{"FSSFF", 1}, {"FFSSF", 3}, {"FFSFS", 4}}) {
    auto got = cache.Score(*IndexPattern::Parse(p, 5), start);
    ASSERT_TRUE(got.ok()) << got.status().message();
    const double want = FullLoss(model, seqs, p);
    EXPECT_NEAR(Mean(*got, seqs), want, kSearchLossRelTol * want) << p;
  }
  // A pattern that differs from the committed one before its start layer is refused.
  EXPECT_FALSE(cache.Score(*IndexPattern::Parse("FSSFS", 5), 4).ok());
  // The cached tensors were not changed by scoring: the committed loss is reproduced.
  auto again = cache.Score(*IndexPattern::Parse("FFSFF", 5), 3);
  ASSERT_TRUE(again.ok());
  EXPECT_NEAR(Mean(*again, seqs), FullLoss(model, seqs, "FFSFF"), kSearchLossRelTol * 10);
}

TEST(PatternSearch, OneSharedLayerTargetIsTheExhaustiveSearch) {
  const DsaModel model = RandomModel(6, 21);
  const auto seqs = RandomSequences(2, 48, model.config().vocab_size, 5);
  SearchOptions opt;
  opt.target_full = 5;
  const SearchRun run = Search(model, seqs, opt);
  ASSERT_EQ(run.record.steps.size(), 1u);
  int best = -1;
  double best_loss = 0;
  for (int l = 1; l < 6; ++l) {
    const double loss = FullLoss(model, seqs, Flip("FFFFFF", l, 'S'));
    EXPECT_NEAR(run.record.steps[0].candidates.at(std::to_string(l)), loss, kSearchLossRelTol * loss);
    if (best < 0 || loss < best_loss) best = l, best_loss = loss;
  }
  EXPECT_EQ(run.record.steps[0].layer, best);
  EXPECT_EQ(run.record.CurrentPattern()->ToString(), Flip("FFFFFF", best, 'S'));
  EXPECT_TRUE(run.record.done);
  EXPECT_NEAR(run.record.baseline_loss, FullLoss(model, seqs, "FFFFFF"), kSearchLossRelTol * best_loss);
}

TEST(PatternSearch, FollowsTheExplicitGreedyAndCountsLayerForwards) {
  const DsaModel model = RandomModel(6, 31);
  const auto seqs = RandomSequences(2, 48, model.config().vocab_size, 7);
  SearchOptions opt;
  opt.target_full = 2;
  const SearchRun run = Search(model, seqs, opt);
  std::string p = "FFFFFF";
  int64_t layers = 6, naive = 6;  // the baseline
  for (const std::string& ratio : {"1/2", "1/4", "1/8"}) {
    const std::string u = UniformPattern(6, *ParseTarget(ratio, 6), ratio);
    if (u != "FFFFFF") layers += 6 - static_cast<int>(u.find('S')), naive += 6;
  }
  layers += 6 - 1, naive += 6;  // the uniform pattern with the target's count, FSSFSS
  ASSERT_EQ(run.record.steps.size(), 4u);
  for (const SearchStep& step : run.record.steps) {
    int best = -1;
    double best_loss = 0;
    for (int l = 1; l < 6; ++l) {
      if (p[l] != 'F') continue;
      const double loss = FullLoss(model, seqs, Flip(p, l, 'S'));
      if (best < 0 || loss < best_loss) best = l, best_loss = loss;
      layers += 6 - l, naive += 6;
    }
    EXPECT_EQ(step.layer, best) << "from " << p;
    EXPECT_NEAR(step.loss, best_loss, kSearchLossRelTol * best_loss);
    p = Flip(p, best, 'S');
    layers += 6 - best;  // the refresh after the commit
  }
  EXPECT_EQ(run.record.CurrentPattern()->ToString(), p);
  EXPECT_EQ(run.record.layer_forwards, layers * 2);
  EXPECT_EQ(run.record.naive_layer_forwards, naive * 2);
  EXPECT_LT(run.record.layer_forwards, run.record.naive_layer_forwards);
  // The uniform pattern with the target's count: Full at 0 and 3.
  ASSERT_TRUE(run.record.uniform.has_value());
  EXPECT_EQ(run.record.uniform->pattern, "FSSFSS");
  EXPECT_NEAR(run.record.uniform->loss, FullLoss(model, seqs, "FSSFSS"), 1e-5);
}

TEST(PatternSearch, StoppedAndResumedWritesTheSameJson) {
  const DsaModel model = RandomModel(6, 41);
  const auto seqs = RandomSequences(2, 40, model.config().vocab_size, 9);
  SearchOptions opt;
  opt.target_full = 2;
  opt.refine = true;
  const SearchRun whole = Search(model, seqs, opt);
  SearchOptions first = opt;
  first.stop_after_steps = 2;
  const SearchRun part = Search(model, seqs, first);
  ASSERT_FALSE(part.record.done);
  ASSERT_EQ(part.record.steps.size(), 2u);
  auto reread = SearchRecord::FromJson(nlohmann::json::parse(part.saved.back()), "part.json");
  ASSERT_TRUE(reread.ok()) << reread.status().message();
  const SearchRun rest = Search(model, seqs, opt, *reread);
  ASSERT_TRUE(rest.record.done);
  EXPECT_EQ(rest.saved.back(), whole.saved.back());
}

TEST(PatternSearch, RefineNeverRaisesTheLossAndBudgetStaysWithin) {
  const DsaModel model = RandomModel(7, 51);
  const auto seqs = RandomSequences(2, 48, model.config().vocab_size, 13);
  SearchOptions opt;
  opt.target_full = 3;
  opt.refine = true;
  const SearchRun run = Search(model, seqs, opt);
  EXPECT_EQ(run.record.CurrentPattern()->num_full(), 3);
  EXPECT_LE(run.record.current_loss(), run.record.greedy_loss);
  double last = run.record.greedy_loss;
  for (const SearchStep& s : run.record.steps) {
    if (s.kind != "refine") continue;
    EXPECT_LT(s.loss, last);
    EXPECT_EQ(std::abs(s.from - s.to), 1);
    last = s.loss;
  }
  EXPECT_NEAR(run.record.current_loss(), FullLoss(model, seqs, run.record.CurrentPattern()->ToString()), 1e-5);

  SearchOptions budget;
  budget.budget_pct = 0.5;
  const SearchRun b = Search(model, seqs, budget);
  EXPECT_LE(b.record.current_loss(), b.record.baseline_loss * 1.005);
  // One more flip would have broken the budget (or nothing was left to flip).
  const IndexPattern final = *b.record.CurrentPattern();
  if (final.num_full() > 1) {
    double best = 1e300;
    for (int l = 1; l < 7; ++l) {
      if (final.is_full(l)) best = std::min(best, FullLoss(model, seqs, Flip(final.ToString(), l, 'S')));
    }
    EXPECT_GT(best, b.record.baseline_loss * 1.005);
  }
}

TEST(PatternSearch, LayersWithoutIndexerWeightsStayShared) {
  // FSSF: layers 1 and 2 ship no indexer weights.
  auto model = DsaModel::Load("tests/data/glm_shared_bf16");
  ASSERT_TRUE(model.ok()) << model.status().message();
  const auto seqs = RandomSequences(1, 36, model->config().vocab_size, 17);
  SearchOptions opt;
  opt.target_full = 1;
  const SearchRun run = Search(*model, seqs, opt);
  EXPECT_EQ(run.record.start_pattern, "FSSF");
  EXPECT_EQ(run.record.CurrentPattern()->ToString(), "FSSS");
  ASSERT_EQ(run.record.steps.size(), 1u);
  EXPECT_EQ(run.record.steps[0].candidates.size(), 1u);  // only layer 3 can flip
  // Uniform 1/2 needs layer 2, which has no indexer: no pattern, no loss.
  EXPECT_EQ(run.record.uniform_ratios[0].ratio, "1/2");
  EXPECT_TRUE(run.record.uniform_ratios[0].pattern.empty());

  auto comm = Communicator::Create(nullptr, nullptr);
  auto expect_error = [&](SearchOptions o, const std::string& needle) {
    SearchRecord r;
    const Status s = RunPatternSearch(*model, seqs, 1, o, *comm, &r, [](const SearchRecord&) { return Status::Ok(); },
                                      [](const SearchProgress&) {});
    ASSERT_FALSE(s.ok());
    EXPECT_NE(s.message().find(needle), std::string::npos) << s.message();
  };
  SearchOptions too_many;
  too_many.target_full = 3;
  expect_error(too_many, "only 2 of the 4 layers have indexer weights");
  SearchOptions keep;
  keep.target_full = 2;
  keep.keep_full = {1};
  expect_error(keep, "layer 1 must stay Full but the checkpoint has no indexer weights");
  SearchOptions neither;
  expect_error(neither, "exactly one of --target and --budget");
}

TEST(PatternSearch, ParseTargetAndUniform) {
  EXPECT_EQ(*ParseTarget("1/4", 47), 12);  // the paper's 47-layer 1/4 pattern keeps 12
  EXPECT_EQ(*ParseTarget("1/2", 61), 31);
  EXPECT_EQ(*ParseTarget("1/8", 16), 2);
  EXPECT_EQ(*ParseTarget("5", 16), 5);
  EXPECT_FALSE(ParseTarget("0", 16).ok());
  EXPECT_FALSE(ParseTarget("17", 16).ok());
  EXPECT_FALSE(ParseTarget("2/4", 16).ok());
  EXPECT_FALSE(ParseTarget("x", 16).ok());
  EXPECT_EQ(UniformPattern(8, 2, "1/4"), "FSSSFSSS");
  EXPECT_EQ(UniformPattern(8, 3, ""), "FSFSSFSS");  // Full at floor(i * 8 / 3): 0, 2, 5
}

}  // namespace
}  // namespace indexcache
