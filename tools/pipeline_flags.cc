#include "tools/pipeline_flags.h"

#include "model/config.h"
#include "trainer/nccl_comm.h"

namespace indexcache {

FlagSpec PipelineStagesFlag() {
  return {"pipeline-stages", "pipeline stages P: each rank holds a contiguous range of layers; ranks = P x "
                             "data-parallel replicas (under mpirun/srun)", false, false, "1"};
}

FlagSpec StageBoundariesFlag() {
  return {"stage-boundaries", "first layer of every stage after the first, e.g. 3,6 (default: balanced by "
                              "layer count)"};
}

StageContext PipelineSetup::Context(PipelineTimes* times) const {
  StageContext c;
  if (grid.stages() == 1) return c;
  c.split = &split;
  c.stage = grid.stage();
  c.pipeline = &grid.pipeline();
  c.times = times;
  c.link = link.get();
  return c;
}

void PipelineSetup::UseDeviceLink(const Backend& backend) {
  if (grid.stages() > 1 && backend.device() == Device::kCuda && !link) {
    link = std::make_unique<NcclStageLink>(NcclCommunicator::Create(grid.pipeline()));
  }
}

StatusOr<std::unique_ptr<PipelineSetup>> SetUpPipeline(const Flags& flags, Communicator& world,
                                                       const std::string& model_dir) {
  ASSIGN_OR_RETURN(int64_t stages, flags.GetInt("pipeline-stages", 1, 1, 4096));
  if (stages < 1 || stages > 4096) return InvalidArgument("--pipeline-stages must be in [1, 4096]");
  ASSIGN_OR_RETURN(ModelConfig config, LoadModelConfig(model_dir));
  StageSplitRequest request;
  request.stages = static_cast<int>(stages);
  if (auto b = flags.Get("stage-boundaries")) {
    ASSIGN_OR_RETURN(request.boundaries, ParseStageBoundaries(*b, "--stage-boundaries"));
  }
  ASSIGN_OR_RETURN(StageSplit split, ChooseStageSplit(config, request));
  ASSIGN_OR_RETURN(PipelineGrid grid, PipelineGrid::Create(world, request.stages, "--pipeline-stages"));
  return std::unique_ptr<PipelineSetup>(new PipelineSetup{std::move(grid), std::move(split)});
}

}  // namespace indexcache
