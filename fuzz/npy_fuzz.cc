// libFuzzer: a .npy file (magic, version, header dict, shape, data).
#include "core/npy.h"
#include "fuzz/fuzz_util.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace indexcache;
  const std::string path = fuzz::WriteScratch("tokens.npy", data, size);
  auto t = ReadNpy(path);
  fuzz::CheckOneLine(t.status());
  if (t.ok() && t->numel() <= (1 << 20)) (void)t->ToFloat32();
  return 0;
}
