// libFuzzer: a safetensors file (header JSON, offsets, dtypes, shapes, data). Every tensor that
// opens is read and converted, so offsets that escape the file would be caught by ASan.
#include "core/safetensors.h"
#include "fuzz/fuzz_util.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace indexcache;
  const std::string path = fuzz::WriteScratch("model.safetensors", data, size);
  auto file = SafetensorsFile::Open(path);
  fuzz::CheckOneLine(file.status());
  if (!file.ok()) return 0;
  for (const std::string& name : (*file)->names()) {
    auto t = (*file)->Get(name);
    fuzz::CheckOneLine(t.status());
    if (t.ok() && t->numel() <= (1 << 20)) (void)t->ToFloat32();
  }
  return 0;
}
