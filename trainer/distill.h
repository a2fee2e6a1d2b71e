// One distillation pass over a sequence: the frozen model runs once under the IndexCache pattern
// (capturing each layer's attention inputs and each Full layer's indexer inputs and top-k), then
// every Full layer's indexer is scored against the layers it serves (kernels/distill_loss.h) and
// its weight gradients accumulate (model/indexer_grad.h).
#pragma once

#include <map>
#include <vector>

#include "core/status.h"
#include "model/dsa_model.h"
#include "model/indexer_grad.h"

namespace indexcache {

enum class DistillMode { kDense, kSparse };

// The trainable state: fp32 master copies of the Full layers' indexers.
using IndexerSet = std::map<int, IndexerWeights>;     // layer -> weights
using IndexerGradSet = std::map<int, IndexerGrads>;   // layer -> gradients

struct DistillStats {
  double loss_sum = 0.0;  // sum over Full layers and queries of the multi-layer KL
  int64_t queries = 0;    // (Full layer, query) pairs
  void Add(const DistillStats& o) { loss_sum += o.loss_sum; queries += o.queries; }
  double mean() const { return queries ? loss_sum / queries : 0.0; }
};

// Gradients are of sum over queries of L_f(t) / tokens, i.e. each layer's mean per-token loss:
// `scale` (1 / tokens of the global batch) is applied as they accumulate.
Status DistillSequence(const DsaModel& model, const IndexPattern& pattern, DistillMode mode,
                       const IndexerSet& indexers, const std::vector<int32_t>& tokens, double scale,
                       IndexerGradSet* grads, DistillStats* stats);

}  // namespace indexcache
