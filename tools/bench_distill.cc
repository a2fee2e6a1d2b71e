// Distillation throughput per GPU: one step = the frozen forward of a V3.2-shaped stack, the fused
// loss of every Full layer against the layers it serves (teachers rebuilt per query chunk), the
// students' backward and, with several data-parallel replicas, the NCCL all-reduce of the
// gradients. Under `--pipeline-stages P` the ranks form P stages x D replicas (PipelineGrid) and
// `--distill-micro M` sequences stream through the stages back to back, as the trainer runs them.
//
// `--distill-moe` builds the real thing at full size: DeepSeek-V3.2's MoE (256 experts of 2048, 8
// per token) in every layer and FP8-resident weights (random e4m3, model/random_weights.h), each
// rank generating and placing only its stage's layers.
#include "tools/bench_distill.h"

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <functional>
#include <random>
#include <sstream>

#include "core/limits.h"
#include "model/dsa_model.h"
#include "model/random_weights.h"
#include "parallel/pipeline_grid.h"
#include "parallel/stage_forward.h"
#include "parallel/stage_split.h"
#include "trainer/comm.h"
#include "trainer/distill.h"
#include "trainer/nccl_comm.h"

namespace indexcache {

namespace {

using json = nlohmann::json;

StatusOr<std::vector<DistillMode>> ParseModes(const std::string& text) {
  std::vector<DistillMode> out;
  std::stringstream ss(text);
  std::string item;
  while (std::getline(ss, item, ',')) {
    if (item == "dense") {
      out.push_back(DistillMode::kDense);
    } else if (item == "sparse") {
      out.push_back(DistillMode::kSparse);
    } else {
      return InvalidArgument("--distill-modes: '" + item + "' is not dense or sparse");
    }
  }
  if (out.empty()) return InvalidArgument("--distill-modes is empty");
  return out;
}

double Seconds(const std::function<void()>& fn) {
  const auto t0 = std::chrono::steady_clock::now();
  fn();
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

// Gradient buffers of every student, as views of one flat f32 tensor (one all-reduce).
struct FlatGrads {
  Tensor flat;
  StudentSet grads;
};

FlatGrads NewGrads(Backend& be, const StudentSet& students, int64_t num_params) {
  FlatGrads g;
  g.flat = be.Alloc(DType::kF32, {std::max<int64_t>(1, num_params)});
  int64_t off = 0;
  auto view = [&](const Shape& shape) {
    Tensor v = g.flat.Sub(off, shape);
    off += NumElements(shape);
    return v;
  };
  for (const auto& [l, s] : students) {
    g.grads[l] = {view(s.wq_b.shape()), view(s.wk.shape()), view(s.k_norm_weight.shape()),
                  view(s.k_norm_bias.shape()), view(s.weights_proj.shape())};
  }
  return g;
}

}  // namespace

Status BenchDistill(const Flags& flags, json* out) {
  std::unique_ptr<Communicator> comm = Communicator::Create(nullptr, nullptr);
  ASSIGN_OR_RETURN(std::vector<int64_t> seqs, ParseInts(flags.GetOr("distill-seq", "8192,32768"), "distill-seq"));
  ASSIGN_OR_RETURN(std::vector<DistillMode> modes, ParseModes(flags.GetOr("distill-modes", "dense,sparse")));
  ASSIGN_OR_RETURN(int64_t layers, flags.GetInt("distill-layers", 4, 1, kMaxLayers));
  ASSIGN_OR_RETURN(int64_t stages, flags.GetInt("pipeline-stages", 1, 1, kMaxLayers));
  ASSIGN_OR_RETURN(int64_t micro, flags.GetInt("distill-micro", 1, 1, 1024));
  ASSIGN_OR_RETURN(int64_t chunk, flags.GetInt("distill-chunk", 0, 0, kMaxSeqLen));
  const bool moe = flags.GetBool("distill-moe");
  const int n = static_cast<int>(layers);
  const ModelConfig config = moe ? SyntheticV32MoeConfig(n) : SyntheticV32Config(n);
  ASSIGN_OR_RETURN(IndexPattern pattern,
                   IndexPattern::Parse(flags.GetOr("distill-pattern", "1/" + std::to_string(layers)), n,
                                       "--distill-pattern"));

  ASSIGN_OR_RETURN(PipelineGrid grid, PipelineGrid::Create(*comm, static_cast<int>(stages), "--pipeline-stages"));
  StageSplitRequest request;
  request.stages = grid.stages();
  request.pattern = &pattern;
  request.what = "--pipeline-stages";
  ASSIGN_OR_RETURN(StageSplit split, ChooseStageSplit(config, request));
  const LayerRange range = split.stages[grid.stage()];

  ASSIGN_OR_RETURN(std::shared_ptr<Backend> backend, MakeBackend("cuda"));
  Backend& be = *backend;
  const int64_t free_before = be.FreeDeviceBytes();
  RandomWeightsOptions wopts;
  wopts.range = range;
  wopts.fp8 = moe;
  ASSIGN_OR_RETURN(DsaModel model, DsaModel::FromParts(config, RandomModelWeights(config, 7, wopts), pattern, backend));
  const ResidentWeightBytes resident = model.ResidentBytes();

  StudentSet students;
  int64_t num_params = 0;
  for (int l = range.begin; l < range.end; ++l) {
    if (!pattern.is_full(l)) continue;
    const IndexerWeights& w = model.weights().layers[l].indexer;
    students[l] = {be.WeightF32(w.wq_b.data(), {w.wq_b.rows(), w.wq_b.cols()}),
                   be.WeightF32(w.wk.data(), {w.wk.rows(), w.wk.cols()}),
                   be.WeightF32(w.k_norm_weight.data(), {w.k_norm_weight.size()}),
                   be.WeightF32(w.k_norm_bias.data(), {w.k_norm_bias.size()}),
                   be.WeightF32(w.weights_proj.data(), {w.weights_proj.rows(), w.weights_proj.cols()})};
    num_params += w.wq_b.size() + w.wk.size() + w.k_norm_weight.size() + w.k_norm_bias.size() + w.weights_proj.size();
  }
  // Each stage's gradients are all-reduced over its replicas only.
  std::unique_ptr<NcclCommunicator> nccl;
  if (grid.replicas() > 1) nccl = NcclCommunicator::Create(grid.stage_replicas());
  // Activations cross between stages over NCCL (device to device), or through host MPI as the
  // CPU pipeline does (--pipeline-link mpi, for comparison).
  const std::string link_kind = flags.GetOr("pipeline-link", "nccl");
  if (link_kind != "nccl" && link_kind != "mpi") return InvalidArgument("--pipeline-link must be nccl or mpi");
  std::unique_ptr<NcclStageLink> link;
  if (grid.stages() > 1 && link_kind == "nccl") {
    link = std::make_unique<NcclStageLink>(NcclCommunicator::Create(grid.pipeline()));
  }
  PipelineTimes times;
  StageContext stage_ctx{&split, grid.stage(), &grid.pipeline(), &times, link.get()};
  const StageContext* stage = grid.stages() > 1 ? &stage_ctx : nullptr;

  const bool lead = comm->rank() == 0;
  if (lead) {
    std::printf("\nDistillation step (forward + loss + backward%s): %d %s layers%s, pattern %s, %d stage(s) %s x %d "
                "replica(s)%s, %lld sequence(s) per step per replica\n\n"
                "| mode | seq | step s | tokens/s per GPU | tokens/s total | GPU GB used (max rank) | weights GB "
                "(max rank) | stage busy (min) | loss |\n|---|---:|---:|---:|---:|---:|---:|---:|---:|\n",
                nccl ? " + NCCL all-reduce" : "", n, moe ? "V3.2 (MoE 256 x 2048, FP8-resident)" : "V3.2-shaped",
                moe ? "" : " (dense MLP 18432, bf16)", pattern.ToString().c_str(), grid.stages(),
                split.ToString().c_str(), grid.replicas(),
                grid.stages() > 1 ? (link ? ", stages linked by NCCL" : ", stages linked by host MPI") : "",
                static_cast<long long>(micro));
  }
  std::mt19937 rng(100 + grid.replica());  // the stages of one replica see the same sequences
  std::uniform_int_distribution<int32_t> tok(0, static_cast<int32_t>(config.vocab_size - 1));
  for (int64_t T : seqs) {
    std::vector<std::vector<int32_t>> batch(micro, std::vector<int32_t>(T));
    for (auto& seq : batch) {
      for (auto& t : seq) t = tok(rng);
    }
    for (DistillMode mode : modes) {
      std::vector<double> step_times, busy;
      DistillStats last;  // the last step's loss on this rank's Full layers
      Status status;
      for (int it = 0; it < 3; ++it) {
        const PipelineTimes before = times;
        comm->Barrier();
        const double s = Seconds([&] {
          FlatGrads g = NewGrads(be, students, num_params);
          last = DistillStats();
          for (const auto& seq : batch) {
            status = DistillSequence(model, pattern, mode, students, seq, 1.0 / double(T * micro), &g.grads, &last,
                                     DistillTargets::kServed, stage, chunk);
            if (!status.ok()) return;
          }
          if (nccl) nccl->AllReduceSum(g.flat.data<float>(), g.flat.numel(), nullptr);
          be.Synchronize();
        });
        RETURN_IF_ERROR(status);
        if (it == 0) continue;  // the first step warms up
        step_times.push_back(s);
        const double compute = times.compute_s - before.compute_s, wait = times.wait_s - before.wait_s;
        busy.push_back(stage && compute + wait > 0 ? compute / (compute + wait) : 1.0);
      }
      std::sort(step_times.begin(), step_times.end());
      // The job moves at its slowest rank; memory is the largest rank's.
      std::vector<double> loss = {last.loss_sum, double(last.queries)};
      comm->AllReduceSum(loss.data(), 2);  // over every stage (and replica)
      const double mean_loss = loss[1] > 0 ? loss[0] / loss[1] : 0.0;
      std::vector<double> all(3 * comm->world(), 0.0);
      const int64_t free_after = be.FreeDeviceBytes();
      all[3 * comm->rank()] = step_times[step_times.size() / 2];
      all[3 * comm->rank() + 1] = double(free_before - free_after) / 1e9;
      all[3 * comm->rank() + 2] = *std::min_element(busy.begin(), busy.end());
      comm->AllReduceSum(all.data(), static_cast<int64_t>(all.size()));
      double slowest = 0, used_gb = 0, min_busy = 1;
      for (int r = 0; r < comm->world(); ++r) {
        slowest = std::max(slowest, all[3 * r]);
        used_gb = std::max(used_gb, all[3 * r + 1]);
        min_busy = std::min(min_busy, all[3 * r + 2]);
      }
      std::vector<double> wb(comm->world(), 0.0);
      wb[comm->rank()] = double(resident.total()) / 1e9;
      comm->AllReduceSum(wb.data(), static_cast<int64_t>(wb.size()));
      const double weights_gb = *std::max_element(wb.begin(), wb.end());
      const double total = double(T * micro * grid.replicas()) / slowest, per_gpu = total / comm->world();
      if (lead) {
        const char* name = mode == DistillMode::kDense ? "dense" : "sparse";
        std::printf("| %s | %lld | %.3f | %.0f | %.0f | %.1f | %.1f | %.3f | %.6f |\n", name, static_cast<long long>(T),
                    slowest, per_gpu, total, used_gb, weights_gb, min_busy, mean_loss);
        std::fflush(stdout);
        (*out)["distill"].push_back({{"mode", name}, {"seq", T}, {"ranks", comm->world()}, {"stages", grid.stages()},
                                     {"replicas", grid.replicas()}, {"micro_batches", micro}, {"layers", n},
                                     {"moe_fp8", moe}, {"pattern", pattern.ToString()}, {"step_s", slowest},
                                     {"tokens_per_s_per_gpu", per_gpu}, {"tokens_per_s", total},
                                     {"gpu_gb_used_max_rank", used_gb}, {"weights_gb_max_rank", weights_gb},
                                     {"stage_busy_min", min_busy}, {"loss", mean_loss},
                                     {"pipeline_link", grid.stages() > 1 ? link_kind : "none"}});
      }
    }
  }
  return Status::Ok();
}

}  // namespace indexcache
