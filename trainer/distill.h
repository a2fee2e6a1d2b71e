// One distillation pass over a sequence, on the model's backend: the frozen model runs once under
// the IndexCache pattern (keeping each layer's attention inputs and each Full layer's indexer
// inputs and top-k on the device), then every Full layer's indexer (the student,
// model/indexer_student.h) is scored against the layers it serves (Backend::DistillLoss: the
// CPU reference or the fused CUDA kernel) and its weight gradients accumulate.
#pragma once

#include <map>
#include <vector>

#include "core/status.h"
#include "model/dsa_model.h"
#include "model/indexer_student.h"
#include "parallel/stage_forward.h"

namespace indexcache {

enum class DistillMode { kDense, kSparse };
// The teacher of a Full layer f: the mean attention of the layers f serves (IndexCache's
// multi-layer loss), or f's own attention alone (the single-layer loss, for ablations).
enum class DistillTargets { kServed, kOwn };

// Host fp32 master copies of the Full layers' indexers (what the optimizer updates and
// checkpoints hold), by layer.
using IndexerSet = std::map<int, IndexerWeights>;
// Backend tensors of the same (parameters or gradients), by layer.
using StudentSet = std::map<int, StudentParams>;

struct DistillStats {
  double loss_sum = 0.0;  // sum over Full layers and queries of the multi-layer KL
  int64_t queries = 0;    // (Full layer, query) pairs
  void Add(const DistillStats& o) { loss_sum += o.loss_sum; queries += o.queries; }
  double mean() const { return queries ? loss_sum / queries : 0.0; }
};

// Gradients are of `scale` * sum over queries of L_f(t) (the trainer passes 1 / tokens of the
// global batch, making each layer's objective its mean per-token loss); they are added into
// `grads` (null: loss only).
//
// Under a pipeline (`stage` set) the forward runs this stage's layers only (parallel/stage_forward.h:
// the stream and indices buffer arrive from the previous stage and leave for the next), and only
// this stage's Full layers are scored; each must serve only layers of the same stage.
//
// Memory is bounded at any length: the forward keeps no [T, heads, latent_dim] attention queries;
// the teachers' queries are rebuilt from each served layer's q_latent one chunk of `chunk_rows`
// queries at a time (0: DistillChunkRows), and the loss runs per chunk (causal from the chunk's
// first position). The forward's own row chunks are `chunk_rows` too when it is set.
Status DistillSequence(const DsaModel& model, const IndexPattern& pattern, DistillMode mode, const StudentSet& students,
                       const std::vector<int32_t>& tokens, double scale, StudentSet* grads, DistillStats* stats,
                       DistillTargets targets = DistillTargets::kServed, const StageContext* stage = nullptr,
                       int64_t chunk_rows = 0);

// The budget of one chunk's rebuilt teacher queries, and the rows per chunk it allows for a Full
// layer serving `served_layers` layers.
inline constexpr int64_t kDistillTeacherChunkBytes = int64_t{2} << 30;
int64_t DistillChunkRows(const ModelConfig& c, int64_t served_layers, int64_t activation_bytes);

}  // namespace indexcache
