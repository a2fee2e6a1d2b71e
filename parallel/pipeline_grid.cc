#include "parallel/pipeline_grid.h"

namespace indexcache {

StatusOr<PipelineGrid> PipelineGrid::Create(Communicator& world, int stages, const std::string& what) {
  if (stages < 1 || world.world() % stages != 0) {
    return InvalidArgument(what + " " + std::to_string(stages) + " must divide the number of ranks (" +
                           std::to_string(world.world()) + "): ranks = pipeline stages x data-parallel replicas");
  }
  PipelineGrid g;
  g.stages_ = stages;
  g.replicas_ = world.world() / stages;
  g.stage_ = world.rank() % stages;
  g.replica_ = world.rank() / stages;
  g.pipeline_ = world.Split(/*color=*/g.replica_, /*key=*/g.stage_);
  g.stage_replicas_ = world.Split(/*color=*/g.stage_, /*key=*/g.replica_);
  return g;
}

}  // namespace indexcache
