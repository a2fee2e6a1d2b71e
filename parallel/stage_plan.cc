#include "parallel/stage_plan.h"

#include <algorithm>
#include <cstdio>

#include "parallel/contiguous_split.h"

namespace indexcache {

namespace {

constexpr int64_t kMaxGpus = 1 << 16;
constexpr int64_t kMaxSeqLen = int64_t{1} << 24;
constexpr int64_t kMaxSequences = int64_t{1} << 20;
constexpr int64_t kMaxLayers = 512;

std::string Gb(double bytes) {
  char buf[32];
  std::snprintf(buf, sizeof(buf), "%.1f GB", bytes / 1e9);
  return buf;
}

// Items the split may start a stage at: layers >= 1 (the embedding stays with layer 0, the head
// with the last layer); in train mode only Full layers.
std::vector<bool> CutRule(const ModelCosts& costs, const IndexPattern& pattern, PlanMode mode) {
  std::vector<bool> allowed(costs.items.size(), false);
  for (size_t i = 0; i < costs.items.size(); ++i) {
    const int layer = costs.items[i].layer;
    if (layer < 1 || layer >= costs.num_layers) continue;
    allowed[i] = mode != PlanMode::kTrain || pattern.is_full(layer);
  }
  return allowed;
}

int MaxStages(const IndexPattern& pattern, PlanMode mode) {
  return mode == PlanMode::kTrain ? pattern.num_full() : pattern.num_layers();
}

// M micro-batches through stages of the given times.
double PipelineSeconds(const std::vector<double>& stage_seconds, int64_t micro_batches) {
  double sum = 0, slowest = 0;
  for (double t : stage_seconds) {
    sum += t;
    slowest = std::max(slowest, t);
  }
  return stage_seconds.empty() ? 0 : sum + static_cast<double>(micro_batches - 1) * slowest;
}

Status ValidateRequest(const ModelConfig& c, const IndexPattern& pattern, const PlanRequest& r) {
  if (r.gpus < 1 || r.gpus > kMaxGpus) return InvalidArgument("--gpus: must be in 1.." + std::to_string(kMaxGpus));
  if (r.costs.seq_len < 1 || r.costs.seq_len > kMaxSeqLen) {
    return InvalidArgument("--seq-len: must be in 1.." + std::to_string(kMaxSeqLen));
  }
  if (r.costs.chunk < 1 || r.costs.chunk > kMaxSeqLen) return InvalidArgument("--chunk: must be in 1.." + std::to_string(kMaxSeqLen));
  if (r.sequences < 1 || r.sequences > kMaxSequences) {
    return InvalidArgument("--sequences: must be in 1.." + std::to_string(kMaxSequences));
  }
  if (r.gpus_per_node < 1) return InvalidArgument("--gpus-per-node: must be positive");
  if (r.reserve_bytes < 0 || r.gpu_memory_bytes <= r.reserve_bytes) {
    return InvalidArgument("--gpu-mem-gb: must exceed --reserve-gb");
  }
  if (r.pipeline_stages < 0 || (r.pipeline_stages > 0 && r.gpus % r.pipeline_stages != 0)) {
    return InvalidArgument("--pipeline-stages: " + std::to_string(r.pipeline_stages) + " does not divide --gpus " +
                           std::to_string(r.gpus));
  }
  if (c.num_layers > kMaxLayers) {
    return InvalidArgument(c.source + ": field 'num_hidden_layers' = " + std::to_string(c.num_layers) +
                           " exceeds the planner's " + std::to_string(kMaxLayers));
  }
  if (pattern.num_layers() != c.num_layers) return InvalidArgument("--pattern: does not have one letter per layer");
  const int max_stages = MaxStages(pattern, r.costs.mode);
  if (r.pipeline_stages > max_stages) {
    return InvalidArgument("--pipeline-stages: " + std::to_string(r.pipeline_stages) + " exceeds the " +
                           std::to_string(max_stages) +
                           (r.costs.mode == PlanMode::kTrain ? " Full layers a train stage can begin at"
                                                             : " layers"));
  }
  return Status::Ok();
}

// The fewest GPUs (as pipeline stages, one replica) on which the model fits, or 0 if none; the
// smallest largest stage never grows with more stages, so a binary search finds it.
int64_t FewestGpusThatFit(const ModelConfig& c, const IndexPattern& pattern, const PlanRequest& r) {
  CostOptions options = r.costs;
  options.sequences_per_replica = r.sequences;
  auto costs = EstimateCosts(c, pattern, options);
  if (!costs.ok()) return 0;
  SplitProblem problem;
  for (const ItemCost& item : costs->items) problem.items.push_back({item.seconds, item.weight_bytes + item.workspace_bytes});
  problem.cut_allowed = CutRule(*costs, pattern, r.costs.mode);
  auto fits = [&](int stages) {
    problem.stages = stages;
    const int64_t need = SmallestLargestStageBytes(problem);
    return need >= 0 && need + costs->stage_overhead_bytes + r.reserve_bytes <= r.gpu_memory_bytes;
  };
  int lo = 1, hi = MaxStages(pattern, r.costs.mode);
  if (!fits(hi)) return 0;
  while (lo < hi) {
    const int mid = lo + (hi - lo) / 2;
    if (fits(mid)) hi = mid; else lo = mid + 1;
  }
  return lo;
}

}  // namespace

StatusOr<std::vector<PlannedStage>> SplitStages(const ModelCosts& costs, const IndexPattern& pattern, PlanMode mode,
                                                int stages, int64_t capacity_bytes) {
  if (pattern.num_layers() != costs.num_layers) return InvalidArgument("stage split: pattern and costs disagree on the layer count");
  SplitProblem problem;
  for (const ItemCost& item : costs.items) {
    int64_t bytes = 0;
    if (__builtin_add_overflow(item.weight_bytes, item.workspace_bytes, &bytes)) {
      return InvalidArgument("stage split: " + item.name + " bytes overflow 64 bits");
    }
    problem.items.push_back({item.seconds, bytes});
  }
  problem.cut_allowed = CutRule(costs, pattern, mode);
  problem.stages = stages;
  problem.capacity_bytes = capacity_bytes;
  ASSIGN_OR_RETURN(Split split, BalancedSplit(problem));
  std::vector<PlannedStage> out;
  for (int s = 0; s < stages; ++s) {
    PlannedStage stage;
    stage.first_layer = costs.num_layers;
    stage.last_layer = -1;
    stage.workspace_bytes = costs.stage_overhead_bytes;
    for (int i = split.starts[s]; i < split.starts[s + 1]; ++i) {
      const ItemCost& item = costs.items[i];
      stage.weight_bytes += item.weight_bytes;
      stage.workspace_bytes += item.workspace_bytes;
      stage.seconds += item.seconds;
      stage.seconds_fp8_gemm += item.seconds_fp8_gemm;
      if (item.layer < 0) {
        stage.has_embedding = true;
      } else if (item.layer >= costs.num_layers) {
        stage.has_head = true;
      } else {
        stage.first_layer = std::min(stage.first_layer, item.layer);
        stage.last_layer = std::max(stage.last_layer, item.layer);
        stage.pattern += pattern.is_full(item.layer) ? 'F' : 'S';
        stage.full_indexer_parameters += item.indexer_parameters;
      }
    }
    if (s > 0) {
      stage.receives_indices = mode == PlanMode::kSearch || !pattern.is_full(stage.first_layer);
      if (mode != PlanMode::kSearch && stage.receives_indices) stage.indices_from_layer = pattern.source_of(stage.first_layer);
    }
    out.push_back(stage);
  }
  return out;
}

StatusOr<StagePlan> PlanPipeline(const ModelConfig& c, const IndexPattern& pattern, const PlanRequest& r) {
  RETURN_IF_ERROR(ValidateRequest(c, pattern, r));
  const PlanMode mode = r.costs.mode;
  const int max_stages = MaxStages(pattern, mode);
  std::vector<int64_t> candidates;
  if (r.pipeline_stages > 0) {
    candidates.push_back(r.pipeline_stages);
  } else {
    for (int64_t p = 1; p <= std::min<int64_t>(r.gpus, max_stages); ++p) {
      if (r.gpus % p == 0) candidates.push_back(p);
    }
  }
  const bool crosses_nodes = r.gpus > r.gpus_per_node;
  const int64_t usable = r.gpu_memory_bytes - r.reserve_bytes;
  Status last_error = Status::Ok();
  for (int64_t p : candidates) {
    StagePlan plan;
    plan.mode = mode;
    plan.pipeline_stages = p;
    plan.data_parallel = r.gpus / p;
    plan.micro_batches = (r.sequences + plan.data_parallel - 1) / plan.data_parallel;
    CostOptions options = r.costs;
    options.sequences_per_replica = plan.micro_batches;
    ASSIGN_OR_RETURN(ModelCosts costs, EstimateCosts(c, pattern, options));
    const int64_t capacity = usable - costs.stage_overhead_bytes;
    if (capacity <= 0) {
      last_error = InvalidArgument("the per-stage workspace alone (" + Gb(costs.stage_overhead_bytes) + ") exceeds " +
                                   Gb(usable));
      continue;
    }
    auto stages = SplitStages(costs, pattern, mode, static_cast<int>(p), capacity);
    if (!stages.ok()) {
      SplitProblem problem;
      for (const ItemCost& item : costs.items) problem.items.push_back({item.seconds, item.weight_bytes + item.workspace_bytes});
      problem.cut_allowed = CutRule(costs, pattern, mode);
      problem.stages = static_cast<int>(p);
      const int64_t need = SmallestLargestStageBytes(problem) + costs.stage_overhead_bytes + r.reserve_bytes;
      last_error = InvalidArgument("needs " + Gb(static_cast<double>(need)) + " on its largest GPU with " +
                                   std::to_string(p) + " stages, has " + Gb(static_cast<double>(r.gpu_memory_bytes)));
      continue;
    }
    plan.stages = std::move(*stages);
    plan.boundary_bytes = costs.boundary_bytes;
    const double link = static_cast<double>(costs.boundary_bytes) / StageLinkBytesPerSecond(crosses_nodes);
    std::vector<double> times, times_fp8;
    double allreduce = 0;
    for (size_t s = 0; s < plan.stages.size(); ++s) {
      PlannedStage& stage = plan.stages[s];
      if (s > 0) {
        stage.seconds += link;
        stage.seconds_fp8_gemm += link;
      }
      times.push_back(stage.seconds);
      times_fp8.push_back(stage.seconds_fp8_gemm);
      plan.largest_gpu_bytes = std::max(plan.largest_gpu_bytes, stage.weight_bytes + stage.workspace_bytes + r.reserve_bytes);
      if (mode == PlanMode::kTrain && plan.data_parallel > 1) {
        const double d = static_cast<double>(plan.data_parallel);
        allreduce = std::max(allreduce, stage.full_indexer_parameters * 4.0 * 2 * (d - 1) / d / AllReduceBusBytesPerSecond());
      }
    }
    const double slowest = *std::max_element(times.begin(), times.end());
    double total = 0;
    for (double t : times) total += t;
    plan.balance = total / static_cast<double>(times.size()) / slowest;
    const double m = static_cast<double>(plan.micro_batches);
    plan.pipeline_efficiency = m / (m + static_cast<double>(p) - 1);
    plan.micro_batch_pipeline_s = PipelineSeconds(times, plan.micro_batches);
    plan.full_forward_s = plan.micro_batch_pipeline_s;
    plan.allreduce_s = allreduce;
    if (mode == PlanMode::kSearch) {
      // The first greedy step: every candidate c = 1..N-1 reruns layers c.. from the prefix cache,
      // then one refresh after the commit (counted from layer 1, the worst case).
      auto suffix = [&](int from_layer, bool fp8) {
        std::vector<double> suffix_times;
        for (size_t s = 0; s < plan.stages.size(); ++s) {
          const PlannedStage& stage = plan.stages[s];
          if (stage.last_layer < from_layer && !stage.has_head) continue;
          double t = fp8 ? stage.seconds_fp8_gemm : stage.seconds;
          if (stage.first_layer < from_layer) {  // only its layers >= from_layer run
            const int stage_layers = stage.last_layer - stage.first_layer + 1;
            t *= static_cast<double>(stage.last_layer - from_layer + 1) / stage_layers;
          }
          suffix_times.push_back(t);
        }
        return PipelineSeconds(suffix_times, plan.micro_batches);
      };
      for (bool fp8 : {false, true}) {
        double step = suffix(1, fp8);
        for (int cand = 1; cand < c.num_layers; ++cand) step += suffix(cand, fp8);
        (fp8 ? plan.step_time_fp8_gemm_s : plan.step_time_s) = step;
      }
    } else {
      plan.step_time_s = plan.micro_batch_pipeline_s + allreduce;
      plan.step_time_fp8_gemm_s = PipelineSeconds(times_fp8, plan.micro_batches) + allreduce;
      plan.tokens_per_s = static_cast<double>(r.sequences) * r.costs.seq_len / plan.step_time_s;
    }
    for (size_t s = 1; s < plan.stages.size(); ++s) {
      const PlannedStage& stage = plan.stages[s];
      if (mode == PlanMode::kSearch) continue;
      if (stage.receives_indices) {
        plan.notes.push_back("stage " + std::to_string(s) + " begins with Shared layer " + std::to_string(stage.first_layer) +
                             ": the indices buffer of Full layer " + std::to_string(stage.indices_from_layer) +
                             " travels with the hidden state");
      }
    }
    if (mode == PlanMode::kSearch && p > 1) {
      plan.notes.push_back("search: a candidate may make any stage's first layer Shared, so every boundary carries the "
                           "indices buffer");
    }
    if (mode == PlanMode::kTrain) {
      plan.notes.push_back("train: stages begin only at Full layers, so each Full layer's served layers share its stage; "
                           "no LM head is loaded (distillation computes no logits)");
    }
    if (r.sequences < plan.data_parallel) {
      plan.notes.push_back(std::to_string(plan.data_parallel) + " replicas but " + std::to_string(r.sequences) +
                           " sequences: some replicas idle");
    }
    if (plan.micro_batches < p) {
      plan.notes.push_back("only " + std::to_string(plan.micro_batches) + " micro-batches per replica for " +
                           std::to_string(p) + " stages: more sequences per step raise the pipeline efficiency");
    }
    return plan;
  }
  const int64_t fewest = FewestGpusThatFit(c, pattern, r);
  const std::string hint = fewest > 0 ? "; it fits on " + std::to_string(fewest) + " GPUs as " + std::to_string(fewest) +
                                            " pipeline stages with " + std::to_string(r.sequences) + " sequences per replica"
                                      : "; it does not fit even with one stage per " +
                                            std::string(mode == PlanMode::kTrain ? "Full layer" : "layer");
  return InvalidArgument(c.source + ": does not fit on " + std::to_string(r.gpus) + " GPUs (" + PlanModeName(mode) +
                         ", " + std::to_string(r.costs.seq_len) + " tokens): " + last_error.message() + hint);
}

}  // namespace indexcache
