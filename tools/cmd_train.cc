// indexcache train / export: training-aware IndexCache and its hand-off to serving engines.
#include <cstdio>
#include <map>

#include <nlohmann/json.hpp>

#include "core/file_util.h"
#include "core/limits.h"
#include "model/config.h"
#include "tools/commands.h"
#include "trainer/checkpoint.h"
#include "trainer/comm.h"
#include "trainer/export.h"
#include "trainer/train_config.h"
#include "trainer/trainer.h"

namespace indexcache {

Status RunTrain(const Flags& flags) {
  // Every rank parses the same config; errors before the first collective still end all ranks.
  std::unique_ptr<Communicator> comm = Communicator::Create(nullptr, nullptr);
  auto fail = [&](const Status& s) -> Status {
    if (comm->world() > 1) {
      std::fprintf(stderr, "[rank %d] indexcache train: error: %s\n", comm->rank(), s.message().c_str());
      comm->Abort(1);
    }
    return s;
  };
  auto config = LoadTrainConfig(*flags.Get("config"), flags.repeated("set"));
  if (!config.ok()) return fail(config.status());
  TrainRunOptions run;
  run.resume = flags.GetBool("resume");
  // 0 means "do not stop early"; a negative value used to be ignored silently.
  auto stop = flags.GetInt("stop-after-step", 0, 0, kMaxSteps);
  if (!stop.ok()) return fail(stop.status());
  run.stop_after_step = *stop;
  // A pattern of the wrong length is blamed on where it was written: the last --set of it, or
  // the config file.
  run.pattern_source = *flags.Get("config") + ": field 'pattern'";
  for (const std::string& o : flags.repeated("set")) {
    if (o.rfind("pattern=", 0) == 0) run.pattern_source = "--set " + o + ": field 'pattern'";
  }
  const Status status = RunTraining(*config, run, *comm);
  if (!status.ok()) return fail(status);
  return Status::Ok();
}

// Reads a checkpoint's trained indexers: tensors named model.layers.N.self_attn.indexer.*.
StatusOr<IndexerSet> ReadTrainedIndexers(const std::string& ckpt, const ModelConfig& c) {
  ASSIGN_OR_RETURN(NamedTensors tensors, ReadCheckpointTensors(ckpt, kCheckpointWeightsFile));
  IndexerSet set;
  const std::string where = JoinPath(ckpt, kCheckpointWeightsFile);
  for (const auto& [name, t] : tensors) {
    int layer = -1;
    char rest[64] = {0};
    if (std::sscanf(name.c_str(), "model.layers.%d.self_attn.indexer.%63s", &layer, rest) != 2 || layer < 0 ||
        layer >= c.num_layers) {
      return InvalidArgument(where + ": unexpected tensor '" + name + "'");
    }
    if (t.dtype() != DType::kF32) return InvalidArgument(where + ": tensor '" + name + "' is not F32");
    IndexerWeights& w = set[layer];
    const std::string field = rest;
    const float* d = t.data<float>();
    auto matrix = [&](Matrix* m, int64_t rows, int64_t cols) -> Status {
      if (t.shape() != Shape{rows, cols}) return InvalidArgument(where + ": tensor '" + name + "' has shape " + ShapeToString(t.shape()));
      *m = Eigen::Map<const Matrix>(d, rows, cols);
      return Status::Ok();
    };
    auto vector = [&](Vector* v, int64_t n) -> Status {
      if (t.shape() != Shape{n}) return InvalidArgument(where + ": tensor '" + name + "' has shape " + ShapeToString(t.shape()));
      *v = Eigen::Map<const Vector>(d, n);
      return Status::Ok();
    };
    if (field == "wq_b.weight") RETURN_IF_ERROR(matrix(&w.wq_b, c.index_n_heads * c.index_head_dim, c.q_lora_rank));
    else if (field == "wk.weight") RETURN_IF_ERROR(matrix(&w.wk, c.index_head_dim, c.hidden_size));
    else if (field == "weights_proj.weight") RETURN_IF_ERROR(matrix(&w.weights_proj, c.index_n_heads, c.hidden_size));
    else if (field == "k_norm.weight") RETURN_IF_ERROR(vector(&w.k_norm_weight, c.index_head_dim));
    else if (field == "k_norm.bias") RETURN_IF_ERROR(vector(&w.k_norm_bias, c.index_head_dim));
    else return InvalidArgument(where + ": unexpected tensor '" + name + "'");
  }
  for (const auto& [layer, w] : set) {
    if (w.wq_b.size() == 0 || w.wk.size() == 0 || w.weights_proj.size() == 0 || w.k_norm_weight.size() == 0 ||
        w.k_norm_bias.size() == 0) {
      return InvalidArgument(where + ": layer " + std::to_string(layer) + "'s indexer is incomplete");
    }
  }
  return set;
}

// A checkpoint directory, or a checkpoint root (its latest checkpoint).
StatusOr<std::string> ResolveCheckpoint(const std::string& path) {
  if (FileExists(JoinPath(path, kCheckpointWeightsFile))) return path;
  ASSIGN_OR_RETURN(std::optional<CheckpointInfo> latest, LatestCheckpoint(path));
  if (!latest) return NotFound(path + ": not a checkpoint and holds no step_* checkpoint");
  return latest->path;
}

Status RunExport(const Flags& flags) {
  const std::string model_dir = *flags.Get("model");
  ASSIGN_OR_RETURN(ModelConfig config, LoadModelConfig(model_dir));
  // Without --checkpoint (a training-free pattern, e.g. from `indexcache search`) the indexers stay
  // as they are and only the pattern keys change.
  std::string ckpt = "(no checkpoint)";
  IndexerSet trained;
  if (auto c = flags.Get("checkpoint")) {
    ASSIGN_OR_RETURN(ckpt, ResolveCheckpoint(*c));
    ASSIGN_OR_RETURN(trained, ReadTrainedIndexers(ckpt, config));
  } else if (!flags.Has("pattern")) {
    return InvalidArgument("give --checkpoint (trained indexers), --pattern (e.g. a search.json), or both");
  }
  IndexPattern pattern;
  if (auto spec = flags.Get("pattern")) {
    ASSIGN_OR_RETURN(pattern, IndexPattern::Parse(*spec, static_cast<int>(config.num_layers)));
  } else {
    ASSIGN_OR_RETURN(nlohmann::json state, ReadCheckpointJson(ckpt, kCheckpointStateFile));
    if (!state.contains("pattern") || !state["pattern"].is_string()) {
      return InvalidArgument(JoinPath(ckpt, kCheckpointStateFile) + ": field 'pattern' is missing");
    }
    ASSIGN_OR_RETURN(pattern, IndexPattern::Parse(state["pattern"].get<std::string>(), static_cast<int>(config.num_layers),
                                                  JoinPath(ckpt, kCheckpointStateFile) + ": pattern"));
  }
  ExportOptions options;
  options.drop_shared_indexers = flags.GetBool("drop-shared-indexers");
  options.force = flags.GetBool("force");
  options.copy_shards = flags.GetBool("copy-shards");
  ASSIGN_OR_RETURN(options.indexer_dtype, ParseIndexerDType(flags.GetOr("indexer-dtype", "checkpoint")));
  const std::string out = *flags.Get("out");
  ExportReport report;
  RETURN_IF_ERROR(ExportModel(model_dir, trained, pattern, options, out, &report));
  for (const std::string& w : report.warnings) std::fprintf(stderr, "indexcache export: warning: %s\n", w.c_str());
  std::printf("exported %s: %zu trained indexer(s) from %s, pattern %s%s\n", out.c_str(), trained.size(), ckpt.c_str(),
              pattern.ToString().c_str(), options.drop_shared_indexers ? ", Shared layers without indexers" : "");
  auto list = [](const std::vector<std::string>& names) {
    std::string s;
    for (const std::string& n : names) s += (s.empty() ? "" : ", ") + n;
    return s.empty() ? std::string("(none)") : s;
  };
  std::printf("shards: %zu hard-linked, %zu copied, %zu rewritten (they held changed or dropped tensors), %zu left "
              "out (nothing else in them); trained tensors: %s\n",
              report.linked_shards.size(), report.copied_shards.size(), report.rewritten_shards.size(),
              report.removed_shards.size(), report.new_shard.empty() ? "none written" : report.new_shard.c_str());
  if (!report.rewritten_shards.empty()) std::printf("rewritten: %s\n", list(report.rewritten_shards).c_str());
  if (!report.removed_shards.empty()) std::printf("left out: %s\n", list(report.removed_shards).c_str());
  std::printf("copied besides config.json and the weights: %s\n", list(report.copied).c_str());
  if (!report.skipped.empty()) std::printf("not copied: %s\n", list(report.skipped).c_str());
  return Status::Ok();
}

}  // namespace indexcache
