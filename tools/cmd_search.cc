// indexcache search: training-free IndexCache, the greedy layer selection by calibration loss
// (search/pattern_search.h), alone or under mpirun/srun (the calibration sequences split over
// ranks). Writes search.json after every step and a picture beside it; --resume continues.
#include <unistd.h>

#include <cmath>
#include <cstdio>
#include <limits>
#include <sstream>

#include <nlohmann/json.hpp>

#include "core/file_util.h"
#include "data/eval_windows.h"
#include "model/dsa_model.h"
#include "search/pattern_search.h"
#include "search/search_picture.h"
#include "search/search_record.h"
#include "tools/commands.h"
#include "tools/pipeline_flags.h"
#include "trainer/comm.h"
#include "viz/svg_plot.h"

namespace indexcache {

namespace {

using json = nlohmann::json;

std::string Duration(double seconds) {
  if (seconds < 0) return "?";
  char buf[32];
  if (seconds < 60) {
    std::snprintf(buf, sizeof(buf), "%.0fs", seconds);
  } else if (seconds < 3600) {
    std::snprintf(buf, sizeof(buf), "%dm%02ds", static_cast<int>(seconds) / 60, static_cast<int>(seconds) % 60);
  } else {
    std::snprintf(buf, sizeof(buf), "%dh%02dm", static_cast<int>(seconds) / 3600, static_cast<int>(seconds) / 60 % 60);
  }
  return buf;
}

StatusOr<std::vector<int>> ParseLayerList(const std::string& spec) {
  std::vector<int> layers;
  std::stringstream ss(spec);
  std::string item;
  while (std::getline(ss, item, ',')) {
    if (item.empty() || item.size() > 9 || item.find_first_not_of("0123456789") != std::string::npos) {
      return InvalidArgument("--keep-full must be a comma-separated list of layer numbers, got '" + spec + "'");
    }
    layers.push_back(std::stoi(item));
  }
  return layers;
}

// The search's settings as recorded in search.json: --resume continues only the same search.
json Settings(const Flags& flags, int64_t sequences, int64_t seq_len, int num_layers, const std::vector<int>& keep) {
  return json{{"model", *flags.Get("model")},
              {"data", *flags.Get("data")},
              {"seq_len", seq_len},
              {"sequences", sequences},
              {"num_layers", num_layers},
              {"target", flags.Has("target") ? json(*flags.Get("target")) : json(nullptr)},
              {"budget_pct", flags.Has("budget") ? json(*flags.Get("budget")) : json(nullptr)},
              {"refine", flags.GetBool("refine")},
              {"keep_full", keep},
              {"device", flags.GetOr("device", "cpu")}};
}

Status SearchOnThisRank(const Flags& flags, Communicator& comm) {
  const bool lead = comm.rank() == 0;
  RETURN_IF_ERROR(CheckDeviceFlag(flags));
  ASSIGN_OR_RETURN(int64_t seq_len, flags.GetInt("seq-len", 0, 2, kMaxEvalSeqLen));
  ASSIGN_OR_RETURN(int64_t max_seqs, flags.GetInt("max-seqs", 0, 0, std::numeric_limits<int64_t>::max()));
  ASSIGN_OR_RETURN(int64_t stop_after, flags.GetInt("stop-after-step", 0, 0, int64_t{1} << 40));
  // MiB; bounded so that `cache_mb << 20` cannot overflow (-1: half the free device memory).
  ASSIGN_OR_RETURN(int64_t cache_mb, flags.GetInt("cache-mb", -1, -1, int64_t{1} << 30));
  const std::string out = flags.GetOr("out", "search.json");
  std::vector<int> keep;
  if (auto k = flags.Get("keep-full")) {
    ASSIGN_OR_RETURN(keep, ParseLayerList(*k));
  }

  SearchOptions opt;
  opt.refine = flags.GetBool("refine");
  opt.keep_full = keep;
  opt.stop_after_steps = static_cast<int>(std::min<int64_t>(stop_after, 1 << 30));
  if (flags.Has("target") == flags.Has("budget")) return InvalidArgument("give exactly one of --target and --budget");
  if (auto b = flags.Get("budget")) {
    char* end = nullptr;
    opt.budget_pct = std::strtod(b->c_str(), &end);
    if (b->empty() || *end != '\0' || !std::isfinite(opt.budget_pct) || opt.budget_pct < 0 || opt.budget_pct > 1e6) {
      return InvalidArgument("--budget must be a percentage >= 0, got '" + *b + "'");
    }
  }

  ASSIGN_OR_RETURN(std::unique_ptr<PipelineSetup> pipe, SetUpPipeline(flags, comm, *flags.Get("model")));
  ASSIGN_OR_RETURN(DsaModel model, DsaModel::Load(*flags.Get("model"), std::nullopt, flags.GetOr("device", "cpu"),
                                                  "--pattern", pipe->layers()));
  LogResidentWeights("search", model);
  pipe->UseDeviceLink(model.backend());
  opt.stage = pipe->Context();
  opt.replica = pipe->grid.replica();
  opt.replicas = pipe->grid.replicas();
  const int n = static_cast<int>(model.config().num_layers);
  if (auto t = flags.Get("target")) {
    ASSIGN_OR_RETURN(opt.target_full, ParseTarget(*t, n));
    if (t->find('/') != std::string::npos) opt.target_ratio = *t;
  }
  ASSIGN_OR_RETURN(std::vector<EvalWindow> windows,
                   ReadEvalWindows(*flags.Get("data"), seq_len, max_seqs, model.config().vocab_size));
  const int64_t total = static_cast<int64_t>(windows.size());
  const int64_t first = total * opt.replica / opt.replicas, last = total * (opt.replica + 1) / opt.replicas;
  std::vector<std::vector<int32_t>> mine;
  for (int64_t i = first; i < last && i < total; ++i) mine.push_back(std::move(windows[i].tokens));
  windows.clear();

  if (model.backend().device() != Device::kCpu) {
    const int64_t free = model.backend().FreeDeviceBytes();
    // Default: half of what is free once the model is resident; the rest stays for activations.
    opt.device_budget_bytes = cache_mb >= 0 ? cache_mb << 20 : free / 2;
  }

  SearchRecord record;
  const json settings = Settings(flags, total, seq_len, n, keep);
  if (flags.GetBool("resume") && FileExists(out)) {
    ASSIGN_OR_RETURN(record, ReadSearchRecord(out));
    for (const auto& [key, value] : settings.items()) {
      if (!record.settings.contains(key) || record.settings[key] != value) {
        return InvalidArgument(out + ": field 'settings." + key + "' is " +
                               (record.settings.contains(key) ? record.settings[key].dump() : "missing") +
                               " but this run has " + value.dump() + ": --resume continues the same search only");
      }
    }
    if (lead) std::fprintf(stderr, "search: resuming %s after %zu steps\n", out.c_str(), record.steps.size());
  } else {
    if (flags.GetBool("resume") && lead) std::fprintf(stderr, "search: %s does not exist; starting a new search\n", out.c_str());
    if (!flags.GetBool("resume") && FileExists(out)) {
      return InvalidArgument(out + " exists: pass --resume to continue that search, or choose another --out");
    }
    record.settings = settings;
  }

  const std::string picture = WithExtension(out, ".svg");
  const std::string title = "IndexCache greedy search, " + std::to_string(n) + " layers, " + std::to_string(total) +
                            " x " + std::to_string(seq_len) + " tokens";
  auto save = [&](const SearchRecord& r) -> Status {
    if (!lead) return Status::Ok();
    RETURN_IF_ERROR(WriteSearchRecord(out, r));
    return WriteSvg(picture, RenderSearchPicture(r, title));
  };
  const bool tty = isatty(STDERR_FILENO);
  auto progress = [&](const SearchProgress& p) {
    if (!lead) return;
    if (p.phase == "greedy" || p.phase == "refine") {
      const double rel = 100.0 * (p.best_loss / record.baseline_loss - 1.0);
      std::string step = p.steps_total > 0 ? std::to_string(p.step) + "/" + std::to_string(p.steps_total)
                                           : std::to_string(p.step);
      char line[256];
      std::snprintf(line, sizeof(line), "%s step %s  candidates %d/%d  best layer %d  loss %.6f (%+.3f%% vs start)  %s%s%s",
                    p.phase.c_str(), step.c_str(), p.candidate, p.candidates, p.best_layer, p.best_loss, rel,
                    Duration(p.seconds_step).c_str(), p.eta_seconds >= 0 ? "  ETA " : "",
                    p.eta_seconds >= 0 ? Duration(p.eta_seconds).c_str() : "");
      if (p.step_done) {
        std::fprintf(stderr, "%s%s\n", tty ? "\r\033[K" : "", line);
      } else if (tty) {
        std::fprintf(stderr, "\r\033[K%s", line);
      }
    } else {
      std::fprintf(stderr, "search: %s (%lld sequences x %lld tokens, %d rank%s)\n", p.phase.c_str(),
                   static_cast<long long>(total), static_cast<long long>(seq_len), comm.world(),
                   comm.world() > 1 ? "s" : "");
    }
    std::fflush(stderr);
  };
  RETURN_IF_ERROR(RunPatternSearch(model, std::move(mine), total, opt, comm, &record, save, progress));
  if (!lead) return Status::Ok();

  ASSIGN_OR_RETURN(IndexPattern pattern, record.CurrentPattern());
  const json j = record.ToJson();
  std::printf("pattern          %s\n", pattern.ToString().c_str());
  std::printf("full layers      %d of %d: %s\n", pattern.num_full(), n, j["full_layers"].dump().c_str());
  std::printf("baseline loss    %.6f (%s)\n", record.baseline_loss, record.start_pattern.c_str());
  std::printf("final loss       %.6f (%+.3f%%)%s\n", record.current_loss(),
              100.0 * (record.current_loss() / record.baseline_loss - 1.0), record.done ? "" : "  [stopped; --resume continues]");
  if (!record.greedy_pattern.empty() && opt.refine) {
    std::printf("greedy loss      %.6f (%s)\n", record.greedy_loss, record.greedy_pattern.c_str());
  }
  if (record.uniform && !record.uniform->pattern.empty()) {
    std::printf("uniform loss     %.6f (%s, %s)\n", record.uniform->loss, record.uniform->ratio.c_str(),
                record.uniform->pattern.c_str());
  }
  std::printf("layer forwards   %lld (naive search: %lld, %.2fx fewer)\n", static_cast<long long>(record.layer_forwards),
              static_cast<long long>(record.naive_layer_forwards),
              record.layer_forwards ? double(record.naive_layer_forwards) / record.layer_forwards : 0.0);
  std::printf("written          %s, %s\n", out.c_str(), picture.c_str());
  return Status::Ok();
}

}  // namespace

Status RunSearch(const Flags& flags) {
  std::unique_ptr<Communicator> comm = Communicator::Create(nullptr, nullptr);
  const Status status = SearchOnThisRank(flags, *comm);
  if (!status.ok() && comm->world() > 1) {
    std::fprintf(stderr, "[rank %d] indexcache search: error: %s\n", comm->rank(), status.message().c_str());
    comm->Abort(1);
  }
  return status;
}

}  // namespace indexcache
