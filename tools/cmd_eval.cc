// indexcache eval: loss (overall and by position), retrieval tasks, top-k overlap and attention
// mass recall for one or several IndexCache patterns. The measuring is eval/evaluate.h; this file
// parses flags, prints the table, and writes the JSON and its pictures.
#include <chrono>
#include <cmath>
#include <cstdio>
#include <limits>

#include <nlohmann/json.hpp>

#include "core/file_util.h"
#include "data/eval_windows.h"
#include "eval/eval_pictures.h"
#include "eval/evaluate.h"
#include "eval/retrieval_tasks.h"
#include "model/dsa_model.h"
#include "tools/commands.h"
#include "tools/pipeline_flags.h"
#include "trainer/comm.h"

namespace indexcache {

namespace {

using json = nlohmann::json;

constexpr size_t kMaxPatterns = 64;

std::vector<std::string> SplitCommas(const std::string& s) {
  std::vector<std::string> out;
  size_t begin = 0;
  while (true) {
    const size_t comma = s.find(',', begin);
    out.push_back(s.substr(begin, comma == std::string::npos ? std::string::npos : comma - begin));
    if (comma == std::string::npos) return out;
    begin = comma + 1;
  }
}

// A pattern's display name: the spec, or a path's file name.
std::string PatternName(const std::string& spec) {
  const size_t slash = spec.find_last_of('/');
  const bool is_path = spec.size() > 5 && spec.compare(spec.size() - 5, 5, ".json") == 0;
  return is_path && slash != std::string::npos ? spec.substr(slash + 1) : spec;
}

// Prints a progress line on stderr at most every 10 seconds, so only long runs show one.
class Progress {
 public:
  void operator()(const std::string& what) {
    const auto now = std::chrono::steady_clock::now();
    if (now - last_ < std::chrono::seconds(10)) return;
    last_ = now;
    const double elapsed = std::chrono::duration<double>(now - start_).count();
    std::fprintf(stderr, "eval: %s (%.0f s)\n", what.c_str(), elapsed);
  }

 private:
  std::chrono::steady_clock::time_point start_ = std::chrono::steady_clock::now(), last_ = start_;
};

Status EvalOnThisRank(const Flags& flags, Communicator& comm) {
  RETURN_IF_ERROR(CheckDeviceFlag(flags));
  ASSIGN_OR_RETURN(std::unique_ptr<PipelineSetup> pipe, SetUpPipeline(flags, comm, *flags.Get("model")));
  ASSIGN_OR_RETURN(int64_t seq_len, flags.GetInt("seq-len", 0, 2, kMaxEvalSeqLen));
  ASSIGN_OR_RETURN(int64_t max_seqs, flags.GetInt("max-seqs", 0, 0, std::numeric_limits<int64_t>::max()));
  EvalOptions options;
  ASSIGN_OR_RETURN(options.bucket, flags.GetInt("bucket", 0, 0, kMaxEvalSeqLen));
  options.overlap = flags.GetBool("overlap");
  ASSIGN_OR_RETURN(options.overlap_queries, flags.GetInt("overlap-queries", 64, 0, kMaxEvalSeqLen));
  ASSIGN_OR_RETURN(options.overlap_windows, flags.GetInt("overlap-seqs", 4, 0, int64_t{1} << 20));
  if (flags.Has("pattern") && flags.Has("patterns")) return InvalidArgument("give --pattern or --patterns, not both");

  // --pattern keeps its old meaning (the model loads under it); --patterns are checked one by one.
  ASSIGN_OR_RETURN(DsaModel model, DsaModel::Load(*flags.Get("model"), flags.Get("pattern"), flags.GetOr("device", "cpu"),
                                                  "--pattern", pipe->layers()));
  RETURN_IF_ERROR(ApplyIndexerFp8Flag(flags, model));
  LogResidentWeights("eval", model);
  pipe->UseDeviceLink(model.backend());
  EvalParallel parallel{pipe->Context(), &comm, pipe->grid.replica(), pipe->grid.replicas()};
  options.parallel = &parallel;
  const int layers = static_cast<int>(model.config().num_layers);
  std::vector<NamedPattern> patterns;
  if (auto list = flags.Get("patterns")) {
    for (const std::string& spec : SplitCommas(*list)) {
      if (spec.empty()) return InvalidArgument("--patterns: empty entry in '" + *list + "'");
      if (patterns.size() >= kMaxPatterns) return InvalidArgument("--patterns: more than " + std::to_string(kMaxPatterns) + " patterns");
      ASSIGN_OR_RETURN(IndexPattern p, IndexPattern::Parse(spec, layers, "--patterns " + spec));
      RETURN_IF_ERROR(model.CheckPattern(p).WithContext("--patterns " + spec));
      patterns.push_back({PatternName(spec), p});
    }
  } else {
    patterns.push_back({flags.Has("pattern") ? PatternName(*flags.Get("pattern")) : "config", model.pattern()});
  }

  const std::string data_path = *flags.Get("data");
  ASSIGN_OR_RETURN(std::vector<EvalWindow> windows,
                   ReadEvalWindows(data_path, seq_len, max_seqs, model.config().vocab_size));
  std::vector<RetrievalTask> tasks;
  if (auto path = flags.Get("tasks")) {
    ASSIGN_OR_RETURN(tasks, ReadTasks(*path, model.config().vocab_size, kMaxEvalSeqLen));
    options.tasks = &tasks;
  }
  Progress progress;
  options.progress = [&progress](const std::string& what) { progress(what); };
  ASSIGN_OR_RETURN(json report, EvaluatePatterns(model, windows, patterns, options));
  if (comm.rank() != 0) return Status::Ok();  // every rank has the same report; rank 0 writes it

  // The single-pattern keys of earlier versions stay, for the first pattern.
  const json& first = report["patterns"][0];
  json j = {{"model", *flags.Get("model")}, {"data", data_path}, {"device", flags.GetOr("device", "cpu")},
            {"pattern", first["pattern"]},  {"loss", first["loss"]}, {"perplexity", first["ppl"]}};
  j.update(report);
  if (flags.Has("tasks")) j["tasks_file"] = *flags.Get("tasks");

  if (auto out = flags.Get("out")) {
    RETURN_IF_ERROR(WriteFileAtomic(*out, j.dump(2) + "\n"));
    ASSIGN_OR_RETURN(std::vector<std::string> pictures, WriteEvalPictures(j, *out));
    if (!flags.GetBool("json")) {
      std::printf("wrote %s", out->c_str());
      for (const std::string& p : pictures) std::printf(", %s", p.c_str());
      std::printf("\n");
    }
  }
  if (flags.GetBool("json")) {
    std::printf("%s\n", j.dump(2).c_str());
    return Status::Ok();
  }
  std::printf("sequences   %zu x %lld tokens\npredicted   %lld tokens per pattern\n", windows.size(),
              static_cast<long long>(seq_len), static_cast<long long>(j["predicted_tokens"].get<int64_t>()));
  std::printf("%-20s %-12s %10s %12s %11s", "name", "pattern", "loss", "perplexity", "difference");
  if (options.tasks) std::printf(" %9s %11s", "accuracy", "answer_loss");
  std::printf("\n");
  for (const json& p : j["patterns"]) {
    std::string letters = p["pattern"].get<std::string>();
    if (letters.size() > 12) letters = letters.substr(0, 10) + "..";
    std::printf("%-20s %-12s %10.6f %12.4f %+11.6f", p["name"].get<std::string>().c_str(), letters.c_str(),
                p["loss"].get<double>(), p["ppl"].get<double>(), p["difference"].get<double>());
    if (p.contains("tasks")) {
      std::printf(" %8.1f%% %11.4f", 100.0 * p["tasks"]["accuracy"].get<double>(), p["tasks"]["answer_loss"].get<double>());
    }
    std::printf("\n");
  }
  return Status::Ok();
}

}  // namespace

Status RunEval(const Flags& flags) {
  std::unique_ptr<Communicator> comm = Communicator::Create(nullptr, nullptr);
  const Status status = EvalOnThisRank(flags, *comm);
  if (!status.ok() && comm->world() > 1) {
    std::fprintf(stderr, "[rank %d] indexcache eval: error: %s\n", comm->rank(), status.message().c_str());
    comm->Abort(1);
  }
  return status;
}

}  // namespace indexcache
