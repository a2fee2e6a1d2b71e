// libFuzzer: a Megatron-LM .idx index over a fixed 64 KiB .bin; documents that open are read.
#include "data/megatron_dataset.h"
#include "fuzz/fuzz_util.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace indexcache;
  static const bool bin = [] {
    std::string bytes(1 << 16, '\0');
    for (size_t i = 0; i < bytes.size(); ++i) bytes[i] = static_cast<char>(i * 7);
    return WriteFileAtomic(fuzz::ScratchDir() + "/ds.bin", bytes).ok();
  }();
  if (!bin) std::abort();
  fuzz::WriteScratch("ds.idx", data, size);
  auto ds = MegatronDataset::Open(fuzz::ScratchDir() + "/ds");
  fuzz::CheckOneLine(ds.status());
  if (ds.ok()) fuzz::ReadSomeTokens(**ds);
  return 0;
}
