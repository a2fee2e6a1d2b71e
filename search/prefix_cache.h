// PrefixCache: the calibration sequences' activations under the committed IndexCache pattern, so
// that scoring a pattern that differs only from layer l on recomputes layers l..N-1 alone.
//
// For each sequence it keeps the residual stream entering every layer >= 1 and the indices buffer
// each Full layer wrote (a Shared layer's buffer is its source's, so the buffer entering any layer
// is found without storing it per layer). A pattern P' that equals the committed pattern P on
// layers [0, l) sees exactly the same stream and buffer entering layer l, so its loss starts there.
//
// Under a pipeline (`stage` set) each stage caches its own layers' inputs, plus the indices buffer
// that entered its first layer from the previous stage (a stage that begins with a Shared layer
// resumes from it); a forward that starts at layer l starts on the stage holding l, and the
// per-sequence losses are those of the last stage (zeros elsewhere).
//
// Where the tensors live: on the CPU backend, host f32; on CUDA, device tensors in the activation
// dtype while `device_budget_bytes` lasts, host f32 copies after that (each costs an upload when
// used). Scores are the per-sequence sums of next-token losses, computed on the backend.
#pragma once

#include <cstdint>
#include <vector>

#include "core/status.h"
#include "core/tensor.h"
#include "model/dsa_model.h"
#include "model/pattern.h"
#include "parallel/stage_forward.h"

namespace indexcache {

class PrefixCache {
 public:
  // `model` must outlive the cache. device_budget_bytes < 0: no limit.
  PrefixCache(const DsaModel* model, std::vector<std::vector<int32_t>> sequences, int64_t device_budget_bytes = -1,
              StageContext stage = {});

  // Makes `pattern` the committed one, recomputing every sequence from layer `from` (its cached
  // input; from == 0 starts at the tokens) and refreshing the cache of layers >= from. The caller
  // guarantees `pattern` equals the previously committed pattern on layers [0, from) (checked).
  // Returns each sequence's summed next-token loss under `pattern`.
  StatusOr<std::vector<double>> Commit(const IndexPattern& pattern, int from);

  // Each sequence's summed next-token loss under `pattern`, which must equal the committed
  // pattern on layers [0, start) (checked): runs layers start..N-1 only.
  StatusOr<std::vector<double>> Score(const IndexPattern& pattern, int start) const;

  int num_sequences() const { return static_cast<int>(sequences_.size()); }
  const IndexPattern& committed() const { return committed_; }
  // Bytes of cached tensors on the backend's device / on the host.
  int64_t device_bytes() const { return device_bytes_; }
  int64_t host_bytes() const { return host_bytes_; }

 private:
  struct Entry {
    std::vector<Tensor> hidden_in;  // [layer]: stream entering the layer (empty for layer 0)
    std::vector<Tensor> topk_out;   // [layer]: indices written by a Full layer (empty for Shared)
    Tensor topk_into_stage;         // the indices buffer received from the previous pipeline stage
  };
  Status CheckPrefix(const IndexPattern& pattern, int layer, const char* what) const;
  // A forward of one sequence under `pattern` from the cached input of layer `start`, computing
  // its per-token losses (the caller adds traces when it refreshes the cache).
  ForwardOptions ResumeAt(const Entry& e, const IndexPattern& pattern, int start) const;
  // Keeps `t` on the device if the budget allows, else a host f32 copy; updates the byte counts.
  Tensor Keep(const Tensor& t);
  void Release(const Tensor& t);

  const DsaModel* model_;
  StageContext stage_;
  LayerRange held_;  // this stage's layers
  std::vector<std::vector<int32_t>> sequences_;
  std::vector<Entry> entries_;
  IndexPattern committed_;
  bool has_committed_ = false;
  int64_t device_budget_bytes_;
  int64_t device_bytes_ = 0, host_bytes_ = 0;
};

}  // namespace indexcache
