// libFuzzer: trainer_state.json of a checkpoint whose weights and optimizer files are valid, read
// as --resume reads it (steps, consistency, the sampler cursor).
#include "data/sequence_sampler.h"
#include "fuzz/fuzz_util.h"
#include "trainer/resume.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace indexcache;
  static const std::string ckpt = [] {
    Tensor w = Tensor::Zeros(DType::kF32, {4, 8});
    const std::map<std::string, std::string> meta = {{"step", "3"}, {"adamw.step", "3"}};
    CheckpointContents c;
    c.tensors[kCheckpointWeightsFile] = {{"wk", w}};
    c.tensors[kCheckpointOptimizerFile] = {{"wk.exp_avg", w}, {"wk.exp_avg_sq", w}};
    c.tensor_metadata = meta;
    c.json[kCheckpointStateFile] = nlohmann::json::object();
    auto path = WriteCheckpoint(fuzz::ScratchDir() + "/ckpt", 3, c);
    if (!path.ok()) std::abort();
    return *path;
  }();
  fuzz::WritePlain(ckpt + "/" + kCheckpointStateFile, data, size);
  ResumeExpectations expect;
  expect.params = {{"wk", {4, 8}}};
  expect.total_steps = 10;
  expect.pattern = "FS";
  auto point = ReadResumePoint({3, ckpt}, expect);
  fuzz::CheckOneLine(point.status());
  if (point.ok()) fuzz::CheckOneLine(CursorFromJson(point->cursor).status());
  return 0;
}
