#include "search/pattern_search.h"

#include <chrono>
#include <cmath>
#include <numeric>

#include "search/prefix_cache.h"

namespace indexcache {

std::string UniformPattern(int n, int num_full, const std::string& ratio) {
  std::string p(n, 'S');
  if (!ratio.empty()) {
    auto parsed = IndexPattern::Parse(ratio, n);
    if (parsed.ok()) return parsed->ToString();
  }
  for (int i = 0; i < num_full; ++i) p[static_cast<int64_t>(i) * n / num_full] = 'F';
  return p;
}

StatusOr<int> ParseTarget(const std::string& spec, int n) {
  const auto digits = [](const std::string& s) {
    return !s.empty() && s.size() <= 9 && s.find_first_not_of("0123456789") == std::string::npos;
  };
  int full = 0;
  const size_t slash = spec.find('/');
  if (slash != std::string::npos && spec.substr(0, slash) == "1" && digits(spec.substr(slash + 1))) {
    const int den = std::stoi(spec.substr(slash + 1));
    if (den < 1) return InvalidArgument("--target: '" + spec + "' must be 1/N with N >= 1");
    full = (n + den - 1) / den;
  } else if (digits(spec)) {
    full = std::stoi(spec);
  } else {
    return InvalidArgument("--target must be 1/N (a ratio of Full layers) or K (a count), got '" + spec + "'");
  }
  if (full < 1 || full > n) {
    return InvalidArgument("--target " + spec + " keeps " + std::to_string(full) + " Full layers; the model has " +
                           std::to_string(n) + " layers, so it must keep between 1 and " + std::to_string(n));
  }
  return full;
}

namespace {

using Clock = std::chrono::steady_clock;

double Seconds(Clock::time_point since) {
  return std::chrono::duration<double>(Clock::now() - since).count();
}

std::string WithLayer(const IndexPattern& p, int layer, bool full) {
  std::string s = p.ToString();
  s[layer] = full ? 'F' : 'S';
  return s;
}

// The search's state on one rank: its block of sequences, their prefix cache, and the
// cross-rank reduction that turns per-sequence losses into one mean every rank agrees on.
class Search {
 public:
  Search(const DsaModel& model, std::vector<std::vector<int32_t>> seqs, int64_t total, const SearchOptions& opt,
         Communicator& comm, SearchRecord* record, const std::function<Status(const SearchRecord&)>& save,
         const std::function<void(const SearchProgress&)>& progress)
      : model_(model),
        n_(static_cast<int>(model.config().num_layers)),
        total_(total),
        seq_len_(seqs.empty() ? 0 : static_cast<int64_t>(seqs[0].size())),
        first_(opt.replicas > 0 ? total * opt.replica / opt.replicas : total * comm.rank() / comm.world()),
        cache_(&model, std::move(seqs), opt.device_budget_bytes, opt.stage),
        opt_(opt),
        comm_(comm),
        record_(*record),
        save_(save),
        progress_(progress) {}

  Status Run();

 private:
  // Mean next-token loss over all ranks' sequences, from this rank's per-sequence sums.
  double GlobalMean(const std::vector<double>& local) {
    std::vector<double> table(total_, 0.0);
    std::copy(local.begin(), local.end(), table.begin() + first_);
    comm_.AllReduceSum(table.data(), total_);
    double sum = 0.0;
    for (double v : table) sum += v;  // in sequence order on every rank: the same bits everywhere
    return sum / static_cast<double>(total_ * (seq_len_ - 1));
  }
  StatusOr<double> Score(const std::string& pattern, int start) {
    ASSIGN_OR_RETURN(IndexPattern p, IndexPattern::Parse(pattern, n_, "search"));
    const auto t0 = Clock::now();
    ASSIGN_OR_RETURN(std::vector<double> local, cache_.Score(p, start));
    Count(start, Seconds(t0), /*naive_forward=*/true);
    return GlobalMean(local);
  }
  StatusOr<double> Commit(const std::string& pattern, int from) {
    ASSIGN_OR_RETURN(IndexPattern p, IndexPattern::Parse(pattern, n_, "search"));
    const auto t0 = Clock::now();
    ASSIGN_OR_RETURN(std::vector<double> local, cache_.Commit(p, from));
    // A refresh is the cache's own cost; the naive search has none (only the baseline is a forward).
    Count(from, Seconds(t0), /*naive_forward=*/from == 0);
    return GlobalMean(local);
  }
  void Count(int start, double seconds, bool naive_forward) {
    record_.layer_forwards += (n_ - start) * total_;
    if (naive_forward) record_.naive_layer_forwards += n_ * total_;
    layer_seconds_ += seconds;
    layers_timed_ += n_ - start;
  }
  double SecondsPerLayer() const { return layers_timed_ ? layer_seconds_ / layers_timed_ : 0.0; }
  bool HasIndexer(int l) const { return model_.weights().layers[l].has_indexer; }
  bool Movable(int l) const { return l > 0 && !keep_[l]; }

  Status Start();
  // Commits `step` (whose pattern is `next`, first changed at layer `from`): refreshes the cache,
  // records and saves the step, reports it; sets stopped_ when --stop-after-step is reached.
  StatusOr<IndexPattern> CommitStep(const SearchStep& step, const std::string& next, int from, Clock::time_point t0,
                                    SearchProgress* pr);
  Status Greedy();
  Status Refine();
  Status Saved() { return save_(record_); }
  bool StopHere() { return opt_.stop_after_steps > 0 && ++steps_this_run_ >= opt_.stop_after_steps; }
  double EtaGreedy(const std::vector<int>& cands, int remaining_steps, int64_t done_in_step) const;

  const DsaModel& model_;
  const int n_;
  const int64_t total_, seq_len_, first_;
  PrefixCache cache_;
  const SearchOptions& opt_;
  Communicator& comm_;
  SearchRecord& record_;
  const std::function<Status(const SearchRecord&)>& save_;
  const std::function<void(const SearchProgress&)>& progress_;
  std::vector<bool> keep_;
  double layer_seconds_ = 0.0;
  int64_t layers_timed_ = 0;
  int steps_this_run_ = 0;
  bool stopped_ = false;
};

// Baseline and uniform points for a new search; for a resumed one, the cache of its current pattern.
Status Search::Start() {
  keep_.assign(n_, false);
  for (int l : opt_.keep_full) keep_[l] = true;
  if (!record_.start_pattern.empty()) {  // resumed: rebuild the cache of the pattern reached so far
    ASSIGN_OR_RETURN(IndexPattern p, record_.CurrentPattern());
    const int64_t lf = record_.layer_forwards, nlf = record_.naive_layer_forwards;
    RETURN_IF_ERROR(cache_.Commit(p, 0).status());
    record_.layer_forwards = lf;  // rebuilding is not part of the search's own work (the JSON stays the same)
    record_.naive_layer_forwards = nlf;
    return Status::Ok();
  }
  std::string start(n_, 'S');
  for (int l = 0; l < n_; ++l) start[l] = HasIndexer(l) ? 'F' : 'S';
  record_.start_pattern = start;
  SearchProgress pr{"baseline"};
  progress_(pr);
  ASSIGN_OR_RETURN(record_.baseline_loss, Commit(start, 0));
  // Uniform interleavings, scored from the first layer where they leave the start pattern.
  auto uniform = [&](const std::string& ratio, int num_full, const std::string& rule) -> StatusOr<UniformPoint> {
    UniformPoint u;
    u.ratio = ratio;
    const std::string p = UniformPattern(n_, num_full, rule);
    for (int l = 0; l < n_; ++l) {
      if (p[l] == 'F' && start[l] != 'F') return u;  // needs a layer without indexer weights
    }
    for (const UniformPoint& seen : record_.uniform_ratios) {
      if (seen.pattern == p) {
        u.pattern = p;
        u.loss = seen.loss;
        return u;
      }
    }
    int first = 0;
    while (first < n_ && p[first] == start[first]) ++first;
    u.pattern = p;
    if (first == n_) {
      u.loss = record_.baseline_loss;
    } else {
      ASSIGN_OR_RETURN(u.loss, Score(p, first));
    }
    return u;
  };
  for (const std::string& ratio : opt_.uniform_ratios) {
    ASSIGN_OR_RETURN(int k, ParseTarget(ratio, n_));
    pr.phase = "uniform " + ratio;
    progress_(pr);
    ASSIGN_OR_RETURN(UniformPoint u, uniform(ratio, k, ratio));
    record_.uniform_ratios.push_back(u);
  }
  if (opt_.target_full > 0) {
    const std::string name = opt_.target_ratio.empty() ? "K=" + std::to_string(opt_.target_full) : opt_.target_ratio;
    ASSIGN_OR_RETURN(UniformPoint u, uniform(name, opt_.target_full, opt_.target_ratio));
    record_.uniform = u;
  }
  return Saved();
}

double Search::EtaGreedy(const std::vector<int>& cands, int remaining_steps, int64_t done_in_step) const {
  if (cands.empty() || layers_timed_ == 0) return -1.0;
  double avg = 0.0;
  for (int l : cands) avg += n_ - l;
  avg /= cands.size();
  double layers = 0.0;
  for (int j = 0; j < remaining_steps; ++j) layers += (cands.size() - j + 1) * avg;  // candidates + the refresh
  layers -= done_in_step;
  return std::max(0.0, layers) * SecondsPerLayer();
}

StatusOr<IndexPattern> Search::CommitStep(const SearchStep& step, const std::string& next, int from,
                                          Clock::time_point t0, SearchProgress* pr) {
  RETURN_IF_ERROR(Commit(next, from).status());
  ASSIGN_OR_RETURN(IndexPattern p, IndexPattern::Parse(next, n_, "search"));
  record_.steps.push_back(step);
  RETURN_IF_ERROR(Saved());
  pr->step_done = true;
  pr->seconds_step = Seconds(t0);
  progress_(*pr);
  stopped_ = StopHere();
  return p;
}

Status Search::Greedy() {
  ASSIGN_OR_RETURN(IndexPattern p, record_.CurrentPattern());
  const bool budget = opt_.budget_pct >= 0.0;
  const double limit = record_.baseline_loss * (1.0 + opt_.budget_pct / 100.0);
  const int steps_total = budget ? 0 : p.num_full() - opt_.target_full + static_cast<int>(record_.steps.size());
  while (budget || p.num_full() > opt_.target_full) {
    std::vector<int> cands;
    for (int l = 0; l < n_; ++l) {
      if (p.is_full(l) && Movable(l)) cands.push_back(l);
    }
    if (cands.empty()) break;  // budget mode: nothing left to flip
    SearchProgress pr{"greedy"};
    pr.step = static_cast<int>(record_.steps.size()) + 1;
    pr.steps_total = steps_total;
    pr.candidates = static_cast<int>(cands.size());
    const auto t0 = Clock::now();
    SearchStep step;
    step.kind = "greedy";
    int64_t done_layers = 0;
    for (int l : cands) {
      ASSIGN_OR_RETURN(double loss, Score(WithLayer(p, l, false), l));
      step.candidates[std::to_string(l)] = loss;
      if (step.layer < 0 || loss < step.loss) {  // strict: ties keep the lower layer
        step.layer = l;
        step.loss = loss;
      }
      done_layers += n_ - l;
      ++pr.candidate;
      pr.best_layer = step.layer;
      pr.best_loss = step.loss;
      pr.seconds_step = Seconds(t0);
      pr.eta_seconds = budget ? -1.0 : EtaGreedy(cands, p.num_full() - opt_.target_full, done_layers);
      progress_(pr);
    }
    if (budget && step.loss > limit) break;
    ASSIGN_OR_RETURN(p, CommitStep(step, WithLayer(p, step.layer, false), step.layer, t0, &pr));
    if (stopped_) return Status::Ok();
  }
  record_.greedy_pattern = p.ToString();
  record_.greedy_loss = record_.current_loss();
  if (budget) {  // the uniform interleaving with the count the budget allowed
    const int k = p.num_full();
    const std::string u = UniformPattern(n_, k, "");
    UniformPoint point;
    point.ratio = "K=" + std::to_string(k);
    bool possible = true;
    for (int l = 0; l < n_; ++l) possible = possible && (u[l] == 'S' || HasIndexer(l));
    if (possible) {
      int first = 0;
      while (first < n_ && u[first] == record_.greedy_pattern[first]) ++first;
      point.pattern = u;
      if (first == n_) {
        point.loss = record_.greedy_loss;
      } else {
        ASSIGN_OR_RETURN(point.loss, Score(u, first));
      }
    }
    record_.uniform = point;
  }
  return Saved();
}

Status Search::Refine() {
  ASSIGN_OR_RETURN(IndexPattern p, record_.CurrentPattern());
  while (true) {
    std::vector<std::pair<int, int>> moves;
    for (int f = 1; f < n_; ++f) {
      if (!p.is_full(f) || !Movable(f)) continue;
      for (int to : {f - 1, f + 1}) {
        if (to >= 1 && to < n_ && !p.is_full(to) && HasIndexer(to)) moves.emplace_back(f, to);
      }
    }
    if (moves.empty()) break;
    SearchProgress pr{"refine"};
    pr.step = static_cast<int>(record_.steps.size()) + 1;
    pr.candidates = static_cast<int>(moves.size());
    const auto t0 = Clock::now();
    SearchStep step;
    step.kind = "refine";
    for (const auto& [from, to] : moves) {
      std::string q = p.ToString();
      q[from] = 'S';
      q[to] = 'F';
      ASSIGN_OR_RETURN(double loss, Score(q, std::min(from, to)));
      step.candidates[std::to_string(from) + ">" + std::to_string(to)] = loss;
      if (step.from < 0 || loss < step.loss) {
        step.from = from;
        step.to = to;
        step.loss = loss;
      }
      ++pr.candidate;
      pr.best_layer = step.from;
      pr.best_loss = step.loss;
      pr.seconds_step = Seconds(t0);
      progress_(pr);
    }
    if (!(step.loss < record_.current_loss())) break;  // no move lowers the loss: a local optimum
    std::string q = p.ToString();
    q[step.from] = 'S';
    q[step.to] = 'F';
    ASSIGN_OR_RETURN(p, CommitStep(step, q, std::min(step.from, step.to), t0, &pr));
    if (stopped_) return Status::Ok();
  }
  return Status::Ok();
}

Status Search::Run() {
  RETURN_IF_ERROR(Start());
  if (record_.done) return Status::Ok();
  if (record_.greedy_pattern.empty()) {
    RETURN_IF_ERROR(Greedy());
    if (stopped_) return Status::Ok();
  }
  if (opt_.refine) {
    RETURN_IF_ERROR(Refine());
    if (stopped_) return Status::Ok();
  }
  record_.done = true;
  return Saved();
}

}  // namespace

Status RunPatternSearch(const DsaModel& model, std::vector<std::vector<int32_t>> sequences, int64_t total_sequences,
                        const SearchOptions& options, Communicator& comm, SearchRecord* record,
                        const std::function<Status(const SearchRecord&)>& save,
                        const std::function<void(const SearchProgress&)>& progress) {
  const int n = static_cast<int>(model.config().num_layers);
  const int replica = options.replicas > 0 ? options.replica : comm.rank();
  const int replicas = options.replicas > 0 ? options.replicas : comm.world();
  if (total_sequences < replicas) {
    return InvalidArgument("the calibration data has " + std::to_string(total_sequences) + " sequences, fewer than the " +
                           std::to_string(replicas) + " data-parallel replicas (use more data or fewer ranks)");
  }
  const int64_t first = total_sequences * replica / replicas;
  const int64_t last = total_sequences * (replica + 1) / replicas;
  if (static_cast<int64_t>(sequences.size()) != last - first) {
    return InvalidArgument("internal: replica " + std::to_string(replica) + " holds " +
                           std::to_string(sequences.size()) + " sequences, expected " + std::to_string(last - first));
  }
  if ((options.target_full > 0) == (options.budget_pct >= 0.0)) {
    return InvalidArgument("give exactly one of --target and --budget");
  }
  for (int l : options.keep_full) {
    if (l < 0 || l >= n) return InvalidArgument("--keep-full: layer " + std::to_string(l) + " is not in [0, " + std::to_string(n) + ")");
    if (!model.weights().layers[l].has_indexer) {
      return InvalidArgument("--keep-full: layer " + std::to_string(l) +
                             " must stay Full but the checkpoint has no indexer weights for it");
    }
  }
  if (!model.weights().layers[0].has_indexer) {
    return InvalidArgument("layer 0 must be Full but the checkpoint has no indexer weights for it");
  }
  int available = 0, must = 1;
  for (int l = 0; l < n; ++l) available += model.weights().layers[l].has_indexer ? 1 : 0;
  for (int l : options.keep_full) must += l > 0 ? 1 : 0;
  if (options.target_full > 0) {
    if (options.target_full > available) {
      return InvalidArgument("--target keeps " + std::to_string(options.target_full) + " Full layers but only " +
                             std::to_string(available) + " of the " + std::to_string(n) +
                             " layers have indexer weights (a layer without them can only be Shared)");
    }
    if (options.target_full < must) {
      return InvalidArgument("--target keeps " + std::to_string(options.target_full) + " Full layers but layer 0 and "
                             "--keep-full already need " + std::to_string(must));
    }
  }
  Search search(model, std::move(sequences), total_sequences, options, comm, record, save, progress);
  return search.Run();
}

}  // namespace indexcache
