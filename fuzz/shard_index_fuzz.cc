// libFuzzer: model.safetensors.index.json next to one small valid shard. Shard names that leave
// the directory, non-string entries and malformed JSON must all be one-line errors.
#include "core/safetensors.h"
#include "fuzz/fuzz_util.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace indexcache;
  static const bool shard = [] {
    Tensor t = Tensor::Zeros(DType::kF32, {2, 3});
    return WriteSafetensors(fuzz::ScratchDir() + "/model-00001-of-00001.safetensors", {{"w", t}, {"b", t}}).ok();
  }();
  if (!shard) std::abort();
  fuzz::WriteScratch("model.safetensors.index.json", data, size);
  auto ckpt = SafetensorsCheckpoint::Open(fuzz::ScratchDir());
  fuzz::CheckOneLine(ckpt.status());
  if (!ckpt.ok()) return 0;
  int budget = 64;
  for (const std::string& name : ckpt->names()) {
    if (--budget < 0) break;
    fuzz::CheckOneLine(ckpt->Get(name).status());
  }
  return 0;
}
