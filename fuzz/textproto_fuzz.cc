// libFuzzer: a training config in protobuf text format (syntax, unknown fields, open enums, bounds).
// The first line of the input, if it starts with "--set ", is applied as an override.
#include "fuzz/fuzz_util.h"
#include "trainer/train_config.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace indexcache;
  std::string text(reinterpret_cast<const char*>(data), size);
  std::vector<std::string> overrides;
  if (text.rfind("--set ", 0) == 0) {
    const size_t eol = text.find('\n');
    overrides.push_back(text.substr(6, eol == std::string::npos ? std::string::npos : eol - 6));
    text = eol == std::string::npos ? "" : text.substr(eol + 1);
  }
  auto c = ParseTrainConfig(text, "x.textproto", overrides);
  fuzz::CheckOneLine(c.status());
  if (c.ok()) (void)ResolvedConfigText(*c);
  return 0;
}
