// PipelineGrid: the job's ranks as P pipeline stages x D data-parallel replicas (world = P x D).
//
// World rank r is stage r % P of replica r / P: the P ranks of one pipeline are neighbours (on
// one node where they fit, so activations travel over the fastest links), and the D ranks
// holding the same stage form the group that all-reduces that stage's gradients.
#pragma once

#include <memory>

#include "core/status.h"
#include "trainer/comm.h"

namespace indexcache {

class PipelineGrid {
 public:
  // An error when the world size is not a multiple of `stages` (naming `what`, the flag or field).
  static StatusOr<PipelineGrid> Create(Communicator& world, int stages, const std::string& what);

  int stages() const { return stages_; }
  int replicas() const { return replicas_; }
  int stage() const { return stage_; }
  int replica() const { return replica_; }
  bool first_stage() const { return stage_ == 0; }
  bool last_stage() const { return stage_ == stages_ - 1; }
  // This replica's pipeline: rank == stage.
  Communicator& pipeline() const { return *pipeline_; }
  // The ranks holding this stage, one per replica: rank == replica.
  Communicator& stage_replicas() const { return *stage_replicas_; }

 private:
  int stages_ = 1, replicas_ = 1, stage_ = 0, replica_ = 0;
  std::shared_ptr<Communicator> pipeline_, stage_replicas_;
};

}  // namespace indexcache
