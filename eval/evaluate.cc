#include "eval/evaluate.h"

#include <cmath>

#include "eval/position_loss.h"
#include "eval/topk_probe.h"
#include "model/lm_loss.h"

namespace indexcache {

namespace {

using json = nlohmann::json;

std::string Of(size_t i, size_t n) { return std::to_string(i + 1) + "/" + std::to_string(n); }

// Hands every window's per-token losses under `pattern` to `consume`, in window order, on every
// rank. Alone: one forward per window. In parallel: this replica's block of windows streams
// through its pipeline (the last stage keeps the block's losses), then each window's row is
// summed over all ranks (only the owning replica's last stage contributes: x + 0 keeps x's bits).
Status ForEachWindowLoss(const DsaModel& model, const std::vector<EvalWindow>& windows, const IndexPattern& pattern,
                         const EvalParallel* par, const std::function<void(size_t)>& done,
                         const std::function<void(const std::vector<double>&)>& consume) {
  const bool alone = !par || !par->world || par->world->world() == 1;
  const size_t n = windows.size();
  const size_t first = alone ? 0 : n * par->replica / par->replicas;
  const size_t last = alone ? n : n * (par->replica + 1) / par->replicas;
  std::vector<std::vector<double>> block;
  for (size_t w = first; w < last; ++w) {
    ForwardOptions opts;
    opts.pattern = &pattern;
    opts.compute_logits = false;
    opts.compute_loss = true;  // on the backend, in row chunks: no [T, vocab] logits on the host
    ASSIGN_OR_RETURN(StageForward f, ForwardStage(model, par ? par->stage : StageContext{}, windows[w].tokens, opts));
    if (alone) {
      consume(f.result.token_nll);
    } else {
      block.push_back(std::move(f.result.token_nll));  // empty before the last stage
    }
    done(w);
  }
  if (alone) return Status::Ok();
  for (size_t w = 0; w < n; ++w) {
    std::vector<double> row;
    if (w >= first && w < last) row = std::move(block[w - first]);
    row.resize(windows[w].tokens.size() - 1, 0.0);
    par->world->AllReduceSum(row.data(), static_cast<int64_t>(row.size()));
    consume(row);
  }
  return Status::Ok();
}

}  // namespace

IndexPattern AllFullWhereIndexed(const DsaModel& model) {
  std::string letters;
  for (int l = 0; l < model.config().num_layers; ++l) letters += model.weights().layers[l].has_indexer ? 'F' : 'S';
  letters[0] = 'F';  // layer 0 always is; CheckPattern reports a missing layer-0 indexer
  auto p = IndexPattern::Parse(letters, static_cast<int>(model.config().num_layers));
  return p.ok() ? *p : IndexPattern::AllFull(static_cast<int>(model.config().num_layers));
}

StatusOr<nlohmann::json> EvaluatePatterns(const DsaModel& model, const std::vector<EvalWindow>& windows,
                                          const std::vector<NamedPattern>& patterns, const EvalOptions& options) {
  if (patterns.empty()) return InvalidArgument("no pattern to evaluate");
  if (windows.empty()) return InvalidArgument("no window to evaluate");
  if (options.overlap_queries < 0 || options.overlap_queries > kMaxProbeQueries) {
    return InvalidArgument("--overlap-queries must be in [0, " + std::to_string(kMaxProbeQueries) + "]");
  }
  if (options.overlap_windows < 1) return InvalidArgument("--overlap-seqs must be at least 1");
  const EvalParallel* par = options.parallel;
  if (par && par->stage.split && par->stage.split->num_stages() > 1 && (options.tasks || options.overlap)) {
    return InvalidArgument("--tasks and --overlap need every layer on one rank: use --pipeline-stages 1 for them");
  }
  for (const NamedPattern& p : patterns) RETURN_IF_ERROR(model.CheckPattern(p.pattern).WithContext(p.name));
  const int64_t seq_len = static_cast<int64_t>(windows[0].tokens.size());
  const int64_t k = model.config().index_topk;
  const int num_layers = static_cast<int>(model.config().num_layers);
  const size_t probe_windows = std::min<size_t>(windows.size(), static_cast<size_t>(options.overlap_windows));
  auto progress = [&](const std::string& what) {
    if (options.progress) options.progress(what);
  };

  json out = {{"seq_len", seq_len}, {"sequences", windows.size()}};
  json rows = json::array();
  double first_loss = 0.0;
  int64_t predicted = 0;
  for (size_t pi = 0; pi < patterns.size(); ++pi) {
    const NamedPattern& np = patterns[pi];
    LossSum total;
    std::optional<PositionLoss> by_position;
    if (options.bucket > 0) {
      ASSIGN_OR_RETURN(PositionLoss p, PositionLoss::Create(options.bucket, seq_len));
      by_position = std::move(p);
    }
    auto done = [&](size_t w) {
      progress("pattern " + Of(pi, patterns.size()) + " (" + np.name + "): window " + Of(w, windows.size()));
    };
    auto consume = [&](const std::vector<double>& row) {  // in window order: the same sums for any rank grid
      total.Add(SumLosses(row));
      if (by_position) by_position->Add(row);
    };
    RETURN_IF_ERROR(ForEachWindowLoss(model, windows, np.pattern, par, done, consume));
    const double loss = total.mean();
    if (pi == 0) first_loss = loss;
    predicted = total.count;
    json row = {{"name", np.name},        {"pattern", np.pattern.ToString()}, {"loss", loss},
                {"ppl", std::exp(loss)},  {"difference", loss - first_loss},  {"predicted_tokens", total.count}};
    if (by_position) {
      json buckets = json::array();
      for (int64_t b = 0; b < by_position->buckets(); ++b) {
        buckets.push_back({{"begin", b * options.bucket},
                           {"end", std::min((b + 1) * options.bucket, seq_len - 1)},
                           {"count", by_position->count(b)},
                           {"loss", by_position->mean(b)}});
      }
      row["by_position"] = buckets;
    }
    if (options.tasks) {
      TaskReport report;
      for (size_t t = 0; t < options.tasks->size(); ++t) {
        const RetrievalTask& task = (*options.tasks)[t];
        ASSIGN_OR_RETURN(TaskScore s, ScoreTask(model, np.pattern, task));
        report.Add(task, s);
        progress("pattern " + Of(pi, patterns.size()) + " (" + np.name + "): task " + Of(t, options.tasks->size()));
      }
      row["tasks"] = report.ToJson();
    }
    if (options.overlap) {
      std::vector<double> recall(num_layers, 0.0);
      for (size_t w = 0; w < probe_windows; ++w) {
        const std::vector<int64_t> queries = SampleQueries(seq_len, k, options.overlap_queries);
        ASSIGN_OR_RETURN(std::vector<LayerProbe> probes, ProbeLayers(model, windows[w].tokens, np.pattern, queries, true));
        for (int l = 0; l < num_layers; ++l) recall[l] += probes[l].mass_recall / probe_windows;
        progress("pattern " + Of(pi, patterns.size()) + " (" + np.name + "): mass recall window " +
                 Of(w, probe_windows));
      }
      row["mass_recall"] = recall;
    }
    rows.push_back(row);
  }
  out["predicted_tokens"] = predicted;
  if (options.bucket > 0) out["bucket"] = options.bucket;
  if (options.overlap) {
    const IndexPattern all_f = AllFullWhereIndexed(model);
    TopkOverlap overlap(num_layers);
    for (size_t w = 0; w < probe_windows; ++w) {
      const std::vector<int64_t> queries = SampleQueries(seq_len, k, options.overlap_queries);
      ASSIGN_OR_RETURN(std::vector<LayerProbe> probes, ProbeLayers(model, windows[w].tokens, all_f, queries, false));
      overlap.Add(probes, queries);
      progress("overlap under all-F: window " + Of(w, probe_windows));
    }
    out["overlap"] = overlap.Matrix();
    out["overlap_pattern"] = all_f.ToString();
    out["overlap_queries"] = overlap.queries();
  }
  out["patterns"] = rows;
  return out;
}

}  // namespace indexcache
