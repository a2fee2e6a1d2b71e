// libFuzzer: config.json. Every field access is checked (no nlohmann exception may escape), sizes
// are bounded, and deep nesting must not overflow the stack while an error is built.
#include "core/json_util.h"
#include "fuzz/fuzz_util.h"
#include "model/config.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace indexcache;
  auto j = ParseJson(std::string(reinterpret_cast<const char*>(data), size), "config.json");
  fuzz::CheckOneLine(j.status());
  if (!j.ok()) return 0;
  auto c = ParseModelConfig(*j, "config.json");
  fuzz::CheckOneLine(c.status());
  if (c.ok()) (void)c->softmax_scale();
  return 0;
}
