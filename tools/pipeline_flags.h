// --pipeline-stages P and --stage-boundaries B1,B2,... for `eval` and `search`: this rank's place
// in the P x D grid (parallel/pipeline_grid.h), the stage split, and the layers to load.
#pragma once

#include <memory>
#include <string>

#include "core/status.h"
#include "parallel/pipeline_grid.h"
#include "parallel/stage_forward.h"
#include "parallel/stage_split.h"
#include "tools/flags.h"
#include "trainer/comm.h"

namespace indexcache {

struct PipelineSetup {
  PipelineGrid grid;
  StageSplit split;
  std::unique_ptr<StageLink> link;  // set by UseDeviceLink on GPUs
  LayerRange layers() const { return split.stages[grid.stage()]; }
  // Where ForwardStage runs on this rank (null split when there is one stage).
  StageContext Context(PipelineTimes* times = nullptr) const;
  // On a GPU backend with several stages: the stream and indices cross device to device over
  // NCCL (trainer/nccl_comm.h) instead of through host MPI. Every rank of a pipeline calls it.
  void UseDeviceLink(const Backend& backend);
};

// The flags "pipeline-stages" and "stage-boundaries", to add to a command's flag table.
FlagSpec PipelineStagesFlag();
FlagSpec StageBoundariesFlag();

// Reads the flags and the model's config.json (its layer count) and splits `world`.
StatusOr<std::unique_ptr<PipelineSetup>> SetUpPipeline(const Flags& flags, Communicator& world,
                                                       const std::string& model_dir);

}  // namespace indexcache
