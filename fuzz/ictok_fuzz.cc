// libFuzzer: an .ictok token shard (header, offset table, tokens); documents that open are read.
#include "data/token_shard.h"
#include "fuzz/fuzz_util.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace indexcache;
  const std::string path = fuzz::WriteScratch("tokens.ictok", data, size);
  auto shard = TokenShard::Open(path);
  fuzz::CheckOneLine(shard.status());
  if (shard.ok()) fuzz::ReadSomeTokens(**shard);
  return 0;
}
