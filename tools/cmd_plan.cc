// indexcache plan: the pipeline x data-parallel layout of a model on N GPUs from its config.json
// alone: stages, their memory, the estimated step time and where each estimate comes from. The
// planning itself lives in parallel/stage_plan.h; this file parses flags and prints.
#include <cmath>
#include <cstdio>
#include <string>

#include <nlohmann/json.hpp>

#include "model/config.h"
#include "parallel/stage_plan.h"
#include "parallel/weight_inventory.h"
#include "tools/commands.h"

namespace indexcache {

namespace {

StatusOr<double> GetGb(const Flags& flags, const std::string& name, double def) {
  auto v = flags.Get(name);
  if (!v) return def;
  char* end = nullptr;
  const double gb = std::strtod(v->c_str(), &end);
  if (end == v->c_str() || *end != '\0' || !(gb >= 0) || gb > 1e6) {
    return InvalidArgument("--" + name + ": needs a number of GB in 0..1e6, got '" + *v + "'");
  }
  return gb;
}

std::string Gb(double bytes) {
  char buf[32];
  std::snprintf(buf, sizeof(buf), "%.1f", bytes / 1e9);
  return buf;
}

std::string Seconds(double s) {
  char buf[32];
  if (s >= 100) std::snprintf(buf, sizeof(buf), "%.0f s", s);
  else if (s >= 1) std::snprintf(buf, sizeof(buf), "%.2f s", s);
  else std::snprintf(buf, sizeof(buf), "%.1f ms", s * 1e3);
  return buf;
}

nlohmann::json PlanJson(const StagePlan& plan, const PlanRequest& r, const ModelConfig& c, const IndexPattern& pattern,
                        const std::vector<std::string>& sources) {
  nlohmann::json stages = nlohmann::json::array();
  for (const PlannedStage& s : plan.stages) {
    stages.push_back({{"layers", {s.first_layer, s.last_layer}},
                      {"weight_bytes", s.weight_bytes},
                      {"workspace_bytes", s.workspace_bytes},
                      {"seconds_per_micro_batch", s.seconds},
                      {"pattern", s.pattern},
                      {"embedding", s.has_embedding},
                      {"head", s.has_head},
                      {"receives_indices", s.receives_indices},
                      {"indices_from_layer", s.indices_from_layer}});
  }
  return {{"model_type", ModelTypeName(c.model_type)},
          {"mode", PlanModeName(plan.mode)},
          {"gpus", r.gpus},
          {"gpu", r.costs.device.name},
          {"gpu_memory_bytes", r.gpu_memory_bytes},
          {"reserve_bytes", r.reserve_bytes},
          {"seq_len", r.costs.seq_len},
          {"sequences", r.sequences},
          {"pattern", pattern.ToString()},
          {"pipeline_stages", plan.pipeline_stages},
          {"data_parallel", plan.data_parallel},
          {"micro_batches", plan.micro_batches},
          {"pipeline_efficiency", plan.pipeline_efficiency},
          {"balance", plan.balance},
          {"stages", stages},
          {"boundary_bytes", plan.boundary_bytes},
          {"largest_gpu_bytes", plan.largest_gpu_bytes},
          {"full_forward_s", plan.full_forward_s},
          {"allreduce_s", plan.allreduce_s},
          {"step_time_s", plan.step_time_s},
          {"step_time_fp8_gemm_s", plan.step_time_fp8_gemm_s},
          {"tokens_per_s", plan.tokens_per_s},
          {"notes", plan.notes},
          {"estimated_from", sources}};
}

const char* StepMeaning(PlanMode mode) {
  switch (mode) {
    case PlanMode::kTrain: return "one optimizer step over all sequences";
    case PlanMode::kEval: return "all sequences";
    case PlanMode::kSearch: return "the first greedy step: every candidate from the prefix cache + one refresh";
  }
  return "";
}

void PrintPlan(const StagePlan& plan, const PlanRequest& r, const ModelConfig& c, const WeightInventory& inv,
               const IndexPattern& pattern, const std::string& dir, const std::vector<std::string>& sources) {
  std::printf("model        %s (%s, %lld layers, %.1fB parameters, %s weights %s GB)\n", dir.c_str(),
              ModelTypeName(c.model_type), static_cast<long long>(c.num_layers), inv.parameters() / 1e9,
              c.quant.fp8 ? "fp8" : "bf16", Gb(static_cast<double>(inv.device_bytes(c.quant))).c_str());
  std::printf("job          %s, %lld tokens per sequence, %lld sequences, pattern %d of %lld Full\n",
              PlanModeName(plan.mode), static_cast<long long>(r.costs.seq_len), static_cast<long long>(r.sequences),
              pattern.num_full(), static_cast<long long>(c.num_layers));
  std::printf("gpus         %lld x %s (%s GB, %s GB reserved): %lld pipeline stages x %lld data-parallel, %lld "
              "micro-batches per replica\n",
              static_cast<long long>(r.gpus), r.costs.device.name.c_str(), Gb(static_cast<double>(r.gpu_memory_bytes)).c_str(),
              Gb(static_cast<double>(r.reserve_bytes)).c_str(), static_cast<long long>(plan.pipeline_stages),
              static_cast<long long>(plan.data_parallel), static_cast<long long>(plan.micro_batches));
  std::printf("\nstage  layers   full  weights GB  workspace GB  GPU total GB  per micro-batch  indices in\n");
  for (size_t i = 0; i < plan.stages.size(); ++i) {
    const PlannedStage& s = plan.stages[i];
    int full = 0;
    for (char ch : s.pattern) full += ch == 'F';
    const std::string layers = std::to_string(s.first_layer) + "-" + std::to_string(s.last_layer);
    std::string indices = "-";
    if (s.receives_indices) indices = s.indices_from_layer >= 0 ? "from layer " + std::to_string(s.indices_from_layer) : "yes";
    std::printf("%-6zu %-8s %4d  %10s  %12s  %12s  %15s  %s\n", i, layers.c_str(), full,
                Gb(static_cast<double>(s.weight_bytes)).c_str(), Gb(static_cast<double>(s.workspace_bytes)).c_str(),
                Gb(static_cast<double>(s.weight_bytes + s.workspace_bytes + r.reserve_bytes)).c_str(),
                Seconds(s.seconds).c_str(), indices.c_str());
  }
  std::printf("\npipeline     efficiency %.1f %% (M / (M + P - 1)), balance %.1f %% (mean / slowest stage)\n",
              100 * plan.pipeline_efficiency, 100 * plan.balance);
  std::printf("transfers    %s GB per micro-batch and boundary (hidden state + indices)\n",
              Gb(static_cast<double>(plan.boundary_bytes)).c_str());
  std::printf("step time    %s (%s); %s with fp8 GEMMs", Seconds(plan.step_time_s).c_str(), StepMeaning(plan.mode),
              Seconds(plan.step_time_fp8_gemm_s).c_str());
  if (plan.tokens_per_s > 0) std::printf("; %.0f tokens/s", plan.tokens_per_s);
  std::printf("\n");
  if (plan.mode == PlanMode::kSearch) std::printf("forward      %s (all sequences once: building the prefix cache)\n", Seconds(plan.full_forward_s).c_str());
  if (plan.mode == PlanMode::kTrain) std::printf("all-reduce   %s (indexer gradients over the replicas)\n", Seconds(plan.allreduce_s).c_str());
  for (const std::string& n : plan.notes) std::printf("note         %s\n", n.c_str());
  std::printf("\nestimated from (projections, not measurements of this model; memory formulas: docs/scale.md):\n");
  for (const std::string& s : sources) std::printf("  %s\n", s.c_str());
}

}  // namespace

Status RunPlan(const Flags& flags) {
  const std::string dir = *flags.Get("model");
  ASSIGN_OR_RETURN(ModelConfig c, LoadModelConfig(dir));
  ASSIGN_OR_RETURN(WeightInventory inv, InventoryFromConfig(c));
  PlanRequest r;
  ASSIGN_OR_RETURN(r.costs.mode, ParsePlanMode(flags.GetOr("mode", "eval")));
  ASSIGN_OR_RETURN(r.costs.device, DeviceProfileByName(flags.GetOr("gpu", "h200")));
  ASSIGN_OR_RETURN(r.gpus, flags.GetInt("gpus", 1, 1, 65536));
  ASSIGN_OR_RETURN(r.costs.seq_len, flags.GetInt("seq-len", 1, 1, int64_t{1} << 24));
  // Default: the rows the runtime's forward puts in one chunk (bf16 activations).
  ASSIGN_OR_RETURN(r.costs.chunk, flags.GetInt("chunk", ForwardChunkRows(c, 2), 1, int64_t{1} << 24));
  ASSIGN_OR_RETURN(r.sequences, flags.GetInt("sequences", 16, 1, int64_t{1} << 20));
  ASSIGN_OR_RETURN(r.pipeline_stages, flags.GetInt("pipeline-stages", 0, 0, 65536));
  ASSIGN_OR_RETURN(r.gpus_per_node, flags.GetInt("gpus-per-node", 8, 1, 1024));
  ASSIGN_OR_RETURN(double mem_gb, GetGb(flags, "gpu-mem-gb", r.costs.device.memory_gb));
  ASSIGN_OR_RETURN(double reserve_gb, GetGb(flags, "reserve-gb", 4));
  r.gpu_memory_bytes = static_cast<int64_t>(std::llround(mem_gb * 1e9));
  r.reserve_bytes = static_cast<int64_t>(std::llround(reserve_gb * 1e9));
  const std::string loss = flags.GetOr("loss", "dense");
  if (loss != "dense" && loss != "sparse") return InvalidArgument("--loss: '" + loss + "' (expected dense or sparse)");
  r.costs.dense_loss = loss == "dense";
  // The search starts from all-F; train and eval run the given (or the config's) pattern.
  IndexPattern pattern = r.costs.mode == PlanMode::kSearch ? IndexPattern::AllFull(static_cast<int>(c.num_layers)) : c.pattern;
  if (auto spec = flags.Get("pattern")) {
    ASSIGN_OR_RETURN(pattern, IndexPattern::Parse(*spec, static_cast<int>(c.num_layers)));
  }
  ASSIGN_OR_RETURN(StagePlan plan, PlanPipeline(c, pattern, r));
  const std::vector<std::string> sources = MeasurementSources(r.costs.device);
  if (flags.GetBool("json")) {
    std::printf("%s\n", PlanJson(plan, r, c, pattern, sources).dump(2).c_str());
  } else {
    PrintPlan(plan, r, c, inv, pattern, dir, sources);
  }
  return Status::Ok();
}

}  // namespace indexcache
