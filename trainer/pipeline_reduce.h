// What the trainer's pipeline stages must agree on each step: the global gradient norm and
// finiteness over every stage's indexers (so all stages clip by the same factor and skip the same
// steps), and the checkpoint, whose tensors rank 0 gathers from the stages. One rank alone gets
// exactly what the single-rank trainer computes.
#pragma once

#include <vector>

#include "core/safetensors.h"
#include "core/status.h"
#include "optim/span.h"
#include "trainer/comm.h"

namespace indexcache {

struct GradientCheck {
  double norm = 0.0;
  bool finite = true;
};

// `spans` are this stage's gradient tensors; `global_index[i]` is span i's position among all
// stages' tensors (`total` of them). Per-tensor sums of squares are summed over the pipeline in a
// table (each entry non-zero on one stage only) and added in global order: bitwise the norm one
// rank holding every tensor computes (optim/clip.h GlobalGradNorm).
GradientCheck PipelineGradientCheck(const std::vector<FloatSpan>& spans, const std::vector<int>& global_index,
                                    int total, Communicator& pipeline);

// The same from per-slot sums of squares already computed (e.g. on the GPU): a slot is non-finite
// iff its sum is (a float's square never overflows a double).
GradientCheck PipelineGradientCheckFromSums(const std::vector<double>& sums, const std::vector<int>& global_index,
                                            int total, Communicator& pipeline);

// Stage 0 receives every stage's `mine` appended in stage order (the global parameter order of
// contiguous stages); other stages send theirs and get an empty list back.
StatusOr<NamedTensors> GatherToFirstStage(Communicator& pipeline, const NamedTensors& mine, int64_t max_elements);

}  // namespace indexcache
