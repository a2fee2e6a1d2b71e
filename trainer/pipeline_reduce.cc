#include "trainer/pipeline_reduce.h"

#include <cmath>

#include "optim/clip.h"
#include "parallel/tensor_messages.h"

namespace indexcache {

namespace {
constexpr int kCheckpointTag = 21;
}  // namespace

GradientCheck PipelineGradientCheck(const std::vector<FloatSpan>& spans, const std::vector<int>& global_index,
                                    int total, Communicator& pipeline) {
  std::vector<double> sums;
  for (const FloatSpan& g : spans) sums.push_back(SumOfSquares(g.data, g.size));
  return PipelineGradientCheckFromSums(sums, global_index, total, pipeline);
}

GradientCheck PipelineGradientCheckFromSums(const std::vector<double>& sums, const std::vector<int>& global_index,
                                            int total, Communicator& pipeline) {
  std::vector<double> table(static_cast<size_t>(total) + 1, 0.0);  // the last entry counts non-finite stages
  bool finite = true;
  for (size_t i = 0; i < sums.size(); ++i) {
    table[global_index[i]] = sums[i];
    finite = finite && std::isfinite(sums[i]);
  }
  table[total] = finite ? 0.0 : 1.0;
  pipeline.AllReduceSum(table.data(), static_cast<int64_t>(table.size()));
  GradientCheck check;
  double sum = 0.0;
  for (int i = 0; i < total; ++i) sum += table[i];
  check.norm = std::sqrt(sum);
  check.finite = table[total] == 0.0;
  return check;
}

StatusOr<NamedTensors> GatherToFirstStage(Communicator& pipeline, const NamedTensors& mine, int64_t max_elements) {
  if (pipeline.rank() != 0) {
    SendNamedTensors(pipeline, mine, 0, kCheckpointTag);
    return NamedTensors();
  }
  NamedTensors all = mine;
  for (int s = 1; s < pipeline.world(); ++s) {
    ASSIGN_OR_RETURN(NamedTensors part, RecvNamedTensors(pipeline, s, kCheckpointTag, max_elements,
                                                         "checkpoint tensors from pipeline stage " + std::to_string(s)));
    for (auto& p : part) all.push_back(std::move(p));
  }
  return all;
}

}  // namespace indexcache
