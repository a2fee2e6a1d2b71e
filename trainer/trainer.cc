#include "trainer/trainer.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <optional>

#include <nlohmann/json.hpp>

#include "core/file_util.h"
#include "data/open_token_source.h"
#include "data/sequence_sampler.h"
#include "model/dsa_model.h"
#include "optim/adamw.h"
#include "optim/clip.h"
#include "optim/schedule.h"
#include "parallel/pipeline_grid.h"
#include "parallel/stage_split.h"
#include "trainer/checkpoint.h"
#include "trainer/distill.h"
#include "trainer/export.h"
#include "trainer/metrics_log.h"
#include "trainer/nccl_comm.h"
#include "trainer/resident_optimizer.h"
#include "trainer/resume.h"
#include "trainer/pipeline_reduce.h"

namespace indexcache {

namespace {

using json = nlohmann::json;
using Clock = std::chrono::steady_clock;

// One trainable tensor: its checkpoint name, the host fp32 master, and where its gradient sits in
// the flat gradient buffer.
struct Slot {
  std::string name;
  float* param;
  int64_t offset;  // in the flat gradient buffer
  int64_t size;
  Shape shape;
};

// The Full layers' indexer tensors in a fixed order (layer, then wq_b, wk, k_norm.weight,
// k_norm.bias, weights_proj), named as in released checkpoints.
std::vector<Slot> Slots(IndexerSet& masters) {
  std::vector<Slot> slots;
  int64_t offset = 0;
  auto add = [&](const std::string& name, float* data, Shape shape) {
    const int64_t size = NumElements(shape);
    slots.push_back({name, data, offset, size, std::move(shape)});
    offset += size;
  };
  for (auto& [layer, w] : masters) {
    const std::string p = IndexerTensorPrefix(layer);
    add(p + "wq_b.weight", w.wq_b.data(), {w.wq_b.rows(), w.wq_b.cols()});
    add(p + "wk.weight", w.wk.data(), {w.wk.rows(), w.wk.cols()});
    add(p + "k_norm.weight", w.k_norm_weight.data(), {w.k_norm_weight.size()});
    add(p + "k_norm.bias", w.k_norm_bias.data(), {w.k_norm_bias.size()});
    add(p + "weights_proj.weight", w.weights_proj.data(), {w.weights_proj.rows(), w.weights_proj.cols()});
  }
  return slots;
}

// The masters on the backend (the CPU backend borrows them; CUDA copies them up).
StudentSet PlaceStudents(Backend& be, IndexerSet& masters) {
  StudentSet out;
  for (auto& [layer, w] : masters) {
    out[layer] = {be.WeightF32(w.wq_b.data(), {w.wq_b.rows(), w.wq_b.cols()}),
                  be.WeightF32(w.wk.data(), {w.wk.rows(), w.wk.cols()}),
                  be.WeightF32(w.k_norm_weight.data(), {w.k_norm_weight.size()}),
                  be.WeightF32(w.k_norm_bias.data(), {w.k_norm_bias.size()}),
                  be.WeightF32(w.weights_proj.data(), {w.weights_proj.rows(), w.weights_proj.cols()})};
  }
  return out;
}

// Gradient tensors of every student as views into one flat (zeroed) backend buffer, in slot
// order, so one all-reduce covers them all.
StudentSet GradientViews(const Tensor& flat, const std::vector<Slot>& slots) {
  StudentSet out;
  for (size_t i = 0; i < slots.size(); i += 5) {
    int layer = -1;
    std::sscanf(slots[i].name.c_str(), "model.layers.%d.", &layer);
    StudentParams& g = out[layer];
    Tensor* fields[5] = {&g.wq_b, &g.wk, &g.k_norm_weight, &g.k_norm_bias, &g.weights_proj};
    for (int j = 0; j < 5; ++j) *fields[j] = flat.Sub(slots[i + j].offset, slots[i + j].shape);
  }
  return out;
}

Status SyncModel(DsaModel* model, const IndexerSet& masters) {
  for (const auto& [layer, w] : masters) RETURN_IF_ERROR(model->SetIndexer(layer, w));
  return Status::Ok();
}

// Runs `sequences` through DistillSequence with gradients scaled by `scale` (through this rank's
// pipeline stage when `stage` is set: the sequences stream through the stages back to back).
Status Accumulate(const DsaModel& model, const IndexPattern& pattern, DistillMode mode, DistillTargets targets,
                  const StudentSet& students, const std::vector<std::vector<int32_t>>& sequences, double scale,
                  StudentSet* grads, DistillStats* stats, const StageContext* stage) {
  for (const auto& seq : sequences) {
    RETURN_IF_ERROR(DistillSequence(model, pattern, mode, students, seq, scale, grads, stats, targets, stage));
  }
  return Status::Ok();
}

// Each slot's position among the slots of every Full layer of `pattern` (all stages): layer
// order, five tensors per layer, as Slots() orders them.
std::vector<int> GlobalSlotIndex(const std::vector<Slot>& slots, const IndexPattern& pattern) {
  std::vector<int> out;
  for (const Slot& s : slots) {
    int layer = -1;
    std::sscanf(s.name.c_str(), "model.layers.%d.", &layer);
    int rank_among_full = 0;
    for (int l = 0; l < layer; ++l) rank_among_full += pattern.is_full(l) ? 1 : 0;
    out.push_back(rank_among_full * 5 + static_cast<int>(out.size() % 5));
  }
  return out;
}

double Seconds(Clock::time_point a, Clock::time_point b) { return std::chrono::duration<double>(b - a).count(); }

// Prints each stage's busy share of one step ([compute, wait] seconds per stage) next to the
// forward-only GPipe schedule's ideal fill/drain share (P - 1) / (M + P - 1) for M sequences per
// replica; returns the measured idle share (mean over stages).
double PrintPipelineTimes(const std::vector<double>& stage_seconds, int64_t sequences) {
  const int P = static_cast<int>(stage_seconds.size() / 2);
  double idle = 0.0;
  std::string busy;
  for (int s = 0; s < P; ++s) {
    const double c = stage_seconds[2 * s], w = stage_seconds[2 * s + 1];
    const double share = c + w > 0 ? w / (c + w) : 0.0;
    idle += share / P;
    char part[64];
    std::snprintf(part, sizeof(part), "%s%.0f%%", s ? " " : "", 100.0 * (1.0 - share));
    busy += part;
  }
  std::printf("pipeline | stages busy %s | fill/drain + transfer overhead %.1f%% (ideal fill/drain %.1f%% for %lld "
              "sequences over %d stages)\n",
              busy.c_str(), 100.0 * idle, 100.0 * (P - 1) / double(sequences + P - 1),
              static_cast<long long>(sequences), P);
  return idle;
}

}  // namespace

Status RunTraining(const TrainConfig& cfg, const TrainRunOptions& run, Communicator& comm) {
  const bool lead = comm.rank() == 0;
  RETURN_IF_ERROR(CheckWorldSize(cfg, comm.world()));
  if (lead) std::printf("== resolved config (%d rank%s)\n%s", comm.world(), comm.world() > 1 ? "s" : "",
                        ResolvedConfigText(cfg).c_str());

  // --- pipeline grid, stage split, model, pattern and the trainable masters -------------------------
  const std::optional<std::string> pattern_spec =
      cfg.pattern().empty() ? std::nullopt : std::optional<std::string>(cfg.pattern());
  ASSIGN_OR_RETURN(PipelineGrid grid, PipelineGrid::Create(comm, cfg.parallel().pipeline_stages(),
                                                           "field 'parallel.pipeline_stages'"));
  ASSIGN_OR_RETURN(ModelConfig model_config, LoadModelConfig(cfg.model_dir()));
  const std::string pattern_source = run.pattern_source.empty() ? "field 'pattern'" : run.pattern_source;
  IndexPattern split_pattern = model_config.pattern;
  if (pattern_spec) {
    ASSIGN_OR_RETURN(split_pattern,
                     IndexPattern::Parse(*pattern_spec, static_cast<int>(model_config.num_layers), pattern_source));
  }
  StageSplitRequest split_request;
  split_request.stages = grid.stages();
  split_request.pattern = &split_pattern;
  split_request.what = "field 'parallel.stage_boundaries'";
  if (!cfg.parallel().stage_boundaries().empty()) {
    ASSIGN_OR_RETURN(split_request.boundaries, ParseStageBoundaries(cfg.parallel().stage_boundaries(), split_request.what));
  }
  ASSIGN_OR_RETURN(StageSplit split, ChooseStageSplit(model_config, split_request));
  PipelineTimes pipeline_times;
  StageContext stage_context;
  if (grid.stages() > 1) {
    stage_context = {&split, grid.stage(), &grid.pipeline(), &pipeline_times};
    if (lead) std::printf("== pipeline: %d stages x %d replicas, layers %s\n", grid.stages(), grid.replicas(),
                          split.ToString().c_str());
  }
  const StageContext* stage = grid.stages() > 1 ? &stage_context : nullptr;
  ASSIGN_OR_RETURN(DsaModel model, DsaModel::Load(cfg.model_dir(), pattern_spec, cfg.device(), pattern_source,
                                                  split.stages[grid.stage()]));
  if (lead && model.backend().device() == Device::kCuda) {
    std::printf("== weights resident on the GPU: %s\n", DescribeResidentBytes(model.ResidentBytes()).c_str());
  }
  const IndexPattern pattern = model.pattern();
  const LayerRange held = model.layer_range();
  const DistillMode mode = cfg.loss_mode() == TrainConfig::SPARSE ? DistillMode::kSparse : DistillMode::kDense;
  const DistillTargets targets = cfg.served_layers() == TrainConfig::OWN ? DistillTargets::kOwn : DistillTargets::kServed;
  // With targets kOwn each Full layer distils towards itself only: one served layer each.
  RETURN_IF_ERROR(model.backend()
                      .SupportsTraining(model.config(),
                                        targets == DistillTargets::kOwn ? IndexPattern::AllFull(pattern.num_layers())
                                                                        : pattern,
                                        mode == DistillMode::kSparse)
                      .WithContext(model.config().source));
  IndexerSet masters;
  for (int l = held.begin; l < held.end; ++l) {
    if (pattern.is_full(l)) masters.emplace(l, model.weights().layers[l].indexer);
  }
  const std::vector<Slot> slots = Slots(masters);
  const std::vector<int> global_slot = GlobalSlotIndex(slots, pattern);
  const int total_slots = 5 * pattern.num_full();
  Backend& be = model.backend();
  // GPU ranks sum gradients with NCCL on the device; CPU ranks with MPI on the host. Either way
  // over this stage's data-parallel replicas only.
  Communicator& replicas = grid.stage_replicas();
  std::unique_ptr<NcclCommunicator> nccl;
  if (be.device() == Device::kCuda && replicas.world() > 1) nccl = NcclCommunicator::Create(replicas);
  // GPU pipelines move the stream and indices device to device (bf16, lossless) rather than
  // through the host as f32.
  std::unique_ptr<NcclStageLink> stage_link;
  if (be.device() == Device::kCuda && grid.stages() > 1) {
    stage_link = std::make_unique<NcclStageLink>(NcclCommunicator::Create(grid.pipeline()));
    stage_context.link = stage_link.get();
  }
  NamedTensors params;
  int64_t num_params = 0;
  for (const Slot& s : slots) {
    params.push_back({s.name, Tensor::View(DType::kF32, s.shape, s.param, nullptr)});
    num_params += s.size;
  }
  AdamWOptions adam_options;
  adam_options.beta1 = cfg.optimizer().beta1();
  adam_options.beta2 = cfg.optimizer().beta2();
  adam_options.eps = cfg.optimizer().eps();
  adam_options.weight_decay = cfg.optimizer().weight_decay();
  adam_options.no_decay = IsNormOrBias;
  ASSIGN_OR_RETURN(AdamW adam, AdamW::Create(params, adam_options));
  ASSIGN_OR_RETURN(LrSchedule schedule, LrSchedule::Create(cfg.schedule().kind(), cfg.optimizer().lr(),
                                                           cfg.schedule().warmup_steps(),
                                                           cfg.schedule().kind() == "warmup_cosine" ? cfg.steps() : 0,
                                                           cfg.schedule().min_lr()));

  // --- data ----------------------------------------------------------------------------------------
  ASSIGN_OR_RETURN(std::shared_ptr<TokenSource> source, OpenTokenSource(cfg.data().path()));
  SamplerOptions sampler_options;
  sampler_options.seq_len = cfg.seq_len();
  sampler_options.global_batch = cfg.global_batch();
  sampler_options.seed = cfg.seed();
  sampler_options.cross_documents = cfg.data().cross_documents();
  sampler_options.vocab_size = model.config().vocab_size;
  ASSIGN_OR_RETURN(std::unique_ptr<SequenceSampler> sampler, SequenceSampler::Create(source, sampler_options));

  // With optimizer.on_host false the step runs on the backend (trainer/resident_optimizer.h): the
  // students are views of its flat weights, created after a resume has loaded the masters.
  std::optional<ResidentAdamW> resident;
  std::vector<float*> master_ptrs;  // slot order
  for (const Slot& s : slots) master_ptrs.push_back(s.param);
  auto current_students = [&]() {
    return resident ? GradientViews(resident->params(), slots) : PlaceStudents(be, masters);
  };

  // Evaluation data: a fixed global batch of eval windows, the same every time.
  std::unique_ptr<SequenceSampler> eval_sampler;
  SamplerCursor eval_start;
  if (cfg.eval_interval() > 0) {
    ASSIGN_OR_RETURN(std::shared_ptr<TokenSource> eval_source, OpenTokenSource(cfg.data().eval_path()));
    SamplerOptions eval_options = sampler_options;
    eval_options.seed = 0;
    ASSIGN_OR_RETURN(eval_sampler, SequenceSampler::Create(eval_source, eval_options));
    eval_start = eval_sampler->cursor();
  }
  auto evaluate = [&]() -> StatusOr<double> {
    RETURN_IF_ERROR(eval_sampler->Restore(eval_start));
    ASSIGN_OR_RETURN(SequenceSampler::Batch batch, eval_sampler->NextBatch(grid.replica(), grid.replicas()));
    DistillStats stats;
    RETURN_IF_ERROR(Accumulate(model, pattern, mode, targets, current_students(), batch, 0.0, nullptr, &stats, stage));
    double totals[2] = {stats.loss_sum, static_cast<double>(stats.queries)};
    comm.AllReduceSum(totals, 2);
    return totals[1] > 0 ? totals[0] / totals[1] : 0.0;
  };

  // --- resume --------------------------------------------------------------------------------------
  // trainer/resume.h: the newest checkpoint whose every part is valid and consistent; older ones
  // are tried when it is not (with a warning), and with none at all the run starts fresh.
  int64_t step = 0, nonfinite_in_row = 0;
  const std::string ckpt_dir = cfg.checkpoint().dir();
  // Leftovers of saves killed midway are never read; only rank 0 writes the directory.
  if (lead && !ckpt_dir.empty()) RETURN_IF_ERROR(RemoveStaleTempDirs(ckpt_dir).status());
  bool resumed = false;
  if (run.resume) {
    if (ckpt_dir.empty()) return InvalidArgument("--resume needs checkpoint.dir");
    ResumeExpectations expect;
    for (const Slot& s : slots) expect.params.emplace_back(s.name, s.shape);
    expect.total_steps = cfg.steps();
    expect.pattern = pattern.ToString();
    // Rank 0 writes one checkpoint with every stage's indexers; a stage checks and loads its own.
    expect.other_tensors_allowed = grid.stages() > 1;
    // The parts the trainer owns load here; each validates before it changes anything.
    auto apply = [&](const ResumePoint& point) -> Status {
      const std::string state_path = JoinPath(point.path, kCheckpointStateFile);
      StatusOr<SamplerCursor> cursor = CursorFromJson(point.cursor);
      if (!cursor.ok()) return cursor.status().WithContext(state_path);
      // A pipeline stage reads the optimizer state of its own parameters only.
      auto own_tensor = [&](const std::string& tensor) {
        return std::any_of(slots.begin(), slots.end(), [&](const Slot& s) {
          return tensor == s.name + kExpAvgSuffix || tensor == s.name + kExpAvgSqSuffix;
        });
      };
      RETURN_IF_ERROR(LoadAdamWState(JoinPath(point.path, kCheckpointOptimizerFile), &adam, own_tensor));
      if (adam.step() != point.adamw_step) {
        return DataLoss(JoinPath(point.path, kCheckpointOptimizerFile) + ": AdamW step " + std::to_string(adam.step()) +
                        " differs from " + state_path + "'s adamw_step " + std::to_string(point.adamw_step));
      }
      return sampler->Restore(*cursor).WithContext(state_path);
    };
    std::vector<std::string> warnings;
    ASSIGN_OR_RETURN(std::optional<ResumePoint> point, FindResumePoint(ckpt_dir, expect, apply, &warnings));
    if (lead) {
      for (const std::string& w : warnings) std::fprintf(stderr, "warning: %s\n", w.c_str());
    }
    if (point) {
      for (size_t i = 0; i < slots.size(); ++i) {
        std::memcpy(slots[i].param, point->weights[i].second.raw(), slots[i].size * sizeof(float));
      }
      step = point->step;
      nonfinite_in_row = point->nonfinite_in_row;
      RETURN_IF_ERROR(SyncModel(&model, masters));
      resumed = true;
      if (lead) std::printf("== resumed from %s at step %lld\n", point->path.c_str(), static_cast<long long>(step));
    } else if (lead) {
      std::fprintf(stderr, "notice: --resume: no checkpoint in %s; starting from step 0\n", ckpt_dir.c_str());
    }
  }

  // --- logs ------------------------------------------------------------------------------------------
  std::unique_ptr<JsonlWriter> jsonl;
  std::unique_ptr<TensorBoardWriter> tensorboard;
  if (lead && !cfg.log().jsonl().empty()) {
    // A resumed run continues the log from its step: lines the interrupted run wrote after that
    // checkpoint are dropped, so that no step appears twice.
    if (resumed) RETURN_IF_ERROR(TruncateJsonlAfterStep(cfg.log().jsonl(), step));
    ASSIGN_OR_RETURN(jsonl, JsonlWriter::Open(cfg.log().jsonl(), /*append=*/resumed));
  }
  if (lead && !cfg.log().tensorboard_dir().empty()) {
    ASSIGN_OR_RETURN(tensorboard, TensorBoardWriter::Create(cfg.log().tensorboard_dir()));
  }
  if (lead) {
    std::printf("== training %lld indexer parameters in %d Full layer(s) of pattern %s, %s mode, on %s\n",
                static_cast<long long>(num_params), pattern.num_full(), pattern.ToString().c_str(),
                mode == DistillMode::kSparse ? "sparse" : "dense", model.backend().name());
  }

  auto save = [&](int64_t next_step) -> Status {
    if (ckpt_dir.empty()) return Status::Ok();
    // The host masters and AdamW are the checkpoint's source.
    if (resident) RETURN_IF_ERROR(resident->Download(master_ptrs, &adam));
    NamedTensors all_params = params, all_state = adam.ExportState().tensors;
    if (grid.stages() > 1 && grid.replica() == 0) {  // replica 0's stages hand their pieces to rank 0
      ASSIGN_OR_RETURN(all_params, GatherToFirstStage(grid.pipeline(), params, int64_t{1} << 32));
      ASSIGN_OR_RETURN(all_state, GatherToFirstStage(grid.pipeline(), adam.ExportState().tensors, int64_t{1} << 32));
    }
    if (lead) {
      // Never persist non-finite weights: a NaN checkpoint would be resumed from, and pruning
      // would then delete the last good one. Every saved checkpoint is finite, so keep_last
      // pruning always keeps a finite one.
      for (const Slot& s : slots) {
        for (int64_t i = 0; i < s.size; ++i) {
          if (!std::isfinite(s.param[i])) {
            return Internal("step " + std::to_string(next_step) + ": tensor '" + s.name +
                            "' is not finite; not saving a checkpoint (the previous ones are kept)");
          }
        }
      }
      CheckpointContents contents;
      contents.tensors[kCheckpointWeightsFile] = all_params;
      contents.tensors[kCheckpointOptimizerFile] = all_state;
      // "adamw.step" is where LoadAdamWState finds the optimizer's step count.
      contents.tensor_metadata = {{"step", std::to_string(next_step)}, {"adamw.step", std::to_string(adam.step())}};
      contents.json[kCheckpointStateFile] = {{"step", next_step},
                                             {"adamw_step", adam.step()},
                                             {"cursor", CursorToJson(sampler->cursor())},
                                             {"nonfinite_in_row", nonfinite_in_row},
                                             {"pattern", pattern.ToString()},
                                             {"model_dir", cfg.model_dir()},
                                             {"world", comm.world()},
                                             {"pipeline_stages", grid.stages()}};
      contents.text[kCheckpointConfigFile] = ResolvedConfigText(cfg);
      ASSIGN_OR_RETURN(std::string path, WriteCheckpoint(ckpt_dir, next_step, contents));
      RETURN_IF_ERROR(PruneCheckpoints(ckpt_dir, cfg.checkpoint().keep_last()).status());
      std::printf("== checkpoint %s\n", path.c_str());
    }
    comm.Barrier();
    return Status::Ok();
  };

  if (!cfg.optimizer().on_host()) {
    std::vector<ResidentSlot> rslots;
    for (const Slot& s : slots) rslots.push_back({s.name, s.offset, s.shape});
    ASSIGN_OR_RETURN(ResidentAdamW r, ResidentAdamW::Create(be, std::move(rslots),
                                                            {master_ptrs.begin(), master_ptrs.end()}, adam));
    resident.emplace(std::move(r));
  }

  // --- steps ---------------------------------------------------------------------------------------
  const int64_t micro = cfg.micro_batch();
  const double scale = 1.0 / (double(cfg.global_batch()) * double(cfg.seq_len()));
  const auto start_time = Clock::now();
  int64_t steps_this_run = 0;
  std::vector<float> flat(num_params);
  // Fault injection for the job-failure tests: the named rank fails at its first step.
  const char* fail_rank = std::getenv("INDEXCACHE_TEST_FAIL_RANK");
  while (step < cfg.steps()) {
    const auto t0 = Clock::now();
    if (fail_rank && std::atoi(fail_rank) == comm.rank()) return Internal("injected failure (INDEXCACHE_TEST_FAIL_RANK)");
    ASSIGN_OR_RETURN(SequenceSampler::Batch batch, sampler->NextBatch(grid.replica(), grid.replicas()));
    const PipelineTimes times_before = pipeline_times;
    const StudentSet students = current_students();
    Tensor flat = be.Alloc(DType::kF32, {num_params});  // zeroed gradients, all layers
    StudentSet grads = GradientViews(flat, slots);
    DistillStats stats;
    for (size_t i = 0; i < batch.size(); i += micro) {
      const std::vector<std::vector<int32_t>> part(batch.begin() + i, batch.begin() + std::min(batch.size(), i + micro));
      RETURN_IF_ERROR(Accumulate(model, pattern, mode, targets, students, part, scale, &grads, &stats, stage));
    }
    // Sum gradients over this stage's replicas (one flat buffer, bucketed): NCCL on the device, or
    // MPI over a host copy (CPU ranks; with the resident optimizer the sum goes back to the backend).
    if (nccl) nccl->AllReduceSum(flat.data<float>(), num_params, nullptr);
    Tensor host_grads;
    if (!resident || (!nccl && replicas.world() > 1)) host_grads = be.ToHost(flat);
    if (!nccl && replicas.world() > 1) {
      replicas.AllReduceSum(host_grads.data<float>(), num_params);
      if (resident) flat = be.ToDevice(host_grads);
    }
    double totals[2] = {stats.loss_sum, static_cast<double>(stats.queries)};
    comm.AllReduceSum(totals, 2);
    const double loss = totals[1] > 0 ? totals[0] / totals[1] : 0.0;
    // Each stage's compute and waiting seconds this step, gathered over the pipeline for the log.
    std::vector<double> stage_seconds(2 * grid.stages(), 0.0);
    if (stage) {
      stage_seconds[2 * grid.stage()] = pipeline_times.compute_s - times_before.compute_s;
      stage_seconds[2 * grid.stage() + 1] = pipeline_times.wait_s - times_before.wait_s;
      grid.pipeline().AllReduceSum(stage_seconds.data(), static_cast<int64_t>(stage_seconds.size()));
    }

    std::vector<FloatSpan> grad_spans;
    if (!resident) {
      for (const Slot& s : slots) grad_spans.push_back({host_grads.data<float>() + s.offset, s.size});
    }
    const double lr = schedule.LearningRate(step);
    // Norm and finiteness over every stage's gradients: all stages clip alike and skip alike.
    const GradientCheck check =
        resident ? PipelineGradientCheckFromSums(resident->SumsOfSquares(flat), global_slot, total_slots, grid.pipeline())
                 : PipelineGradientCheck(grad_spans, global_slot, total_slots, grid.pipeline());
    const bool finite = std::isfinite(loss) && check.finite;
    double grad_norm = std::numeric_limits<double>::quiet_NaN();
    if (!finite) {
      ++nonfinite_in_row;
      if (lead) {
        std::fprintf(stderr, "warning: step %lld: non-finite loss or gradient; step skipped (%lld in a row)\n",
                     static_cast<long long>(step), static_cast<long long>(nonfinite_in_row));
      }
      if (nonfinite_in_row >= cfg.max_nonfinite_steps()) {
        return Internal("stopping: " + std::to_string(nonfinite_in_row) + " consecutive steps had a non-finite loss "
                        "or gradient (max_nonfinite_steps " + std::to_string(cfg.max_nonfinite_steps()) + ")");
      }
    } else {
      nonfinite_in_row = 0;
      grad_norm = check.norm;
      const float clip = ClipCoefficient(grad_norm, cfg.clip_grad_norm());
      if (resident) {
        if (clip != 1.0f) be.Scale(&flat, clip);
        resident->Step(flat, lr);
        for (const auto& [layer, s] : GradientViews(resident->params(), slots)) {
          RETURN_IF_ERROR(model.SetIndexerOnBackend(
              layer, BackendIndexer{s.wq_b, s.wk, s.k_norm_weight, s.k_norm_bias, s.weights_proj}));
        }
      } else {
        if (clip != 1.0f) {
          for (const FloatSpan& g : grad_spans) ScaleInPlace(g.data, g.size, clip);
        }
        adam.Step(grad_spans, lr);
        RETURN_IF_ERROR(SyncModel(&model, masters));
      }
    }
    ++step;
    ++steps_this_run;

    const auto t1 = Clock::now();
    if (lead && (step % cfg.log().interval() == 0 || step == cfg.steps())) {
      StepMetrics m;
      m.step = step;
      m.loss = loss;
      m.lr = lr;
      m.grad_norm = grad_norm;
      m.tokens_per_s = double(cfg.global_batch()) * cfg.seq_len() / Seconds(t0, t1);
      const double eta = Seconds(start_time, t1) / steps_this_run * double(cfg.steps() - step);
      std::printf("%s\n", FormatProgressLine(m, cfg.steps(), eta).c_str());
      if (stage) {
        const double idle = PrintPipelineTimes(stage_seconds, static_cast<int64_t>(batch.size()));
        if (jsonl) RETURN_IF_ERROR(jsonl->WriteScalars(step, {{"pipeline_idle_fraction", idle}}));
      }
      std::fflush(stdout);
      if (jsonl) RETURN_IF_ERROR(jsonl->Write(m));
      if (tensorboard) RETURN_IF_ERROR(tensorboard->Write(m));
    }
    if (eval_sampler && step % cfg.eval_interval() == 0) {
      ASSIGN_OR_RETURN(double eval_loss, evaluate());
      if (lead) {
        std::printf("eval step %lld | eval loss %.6f\n", static_cast<long long>(step), eval_loss);
        if (jsonl) RETURN_IF_ERROR(jsonl->WriteScalars(step, {{"eval_loss", eval_loss}}));
        if (tensorboard) RETURN_IF_ERROR(tensorboard->WriteScalars(step, {{"eval_loss", eval_loss}}));
      }
    }
    const bool stop_now = run.stop_after_step > 0 && step >= run.stop_after_step;
    const int64_t interval = cfg.checkpoint().interval();
    if ((interval > 0 && step % interval == 0) || step == cfg.steps() || stop_now) RETURN_IF_ERROR(save(step));
    if (stop_now) break;
  }
  return Status::Ok();
}

}  // namespace indexcache
