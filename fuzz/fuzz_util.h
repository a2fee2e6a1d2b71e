// Shared by the libFuzzer harnesses (fuzz/*_fuzz.cc, built by tools/fuzz.sh): a scratch directory
// for parsers that read files, and the property every harness checks besides "no crash": an
// error is one line (the command-line front end prints it as is).
#pragma once

#include <stdlib.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <string>

#include "core/file_util.h"
#include "core/status.h"
#include "data/token_source.h"

namespace indexcache::fuzz {

// One directory per process under $TMPDIR, made on first use.
inline const std::string& ScratchDir() {
  static const std::string dir = [] {
    const char* base = std::getenv("TMPDIR");
    std::string tmpl = std::string(base && *base ? base : "/tmp") + "/indexcache_fuzz_XXXXXX";
    if (!mkdtemp(tmpl.data())) std::abort();
    return tmpl;
  }();
  return dir;
}

// Writes `size` bytes to `path` (plainly: no fsync, which would cost most of each run).
inline void WritePlain(const std::string& path, const uint8_t* data, size_t size) {
  FILE* f = std::fopen(path.c_str(), "wb");
  if (!f || (size > 0 && std::fwrite(data, 1, size, f) != size) || std::fclose(f) != 0) std::abort();
}

// Writes the input to `<scratch>/<name>` and returns the path.
inline std::string WriteScratch(const std::string& name, const uint8_t* data, size_t size) {
  const std::string path = ScratchDir() + "/" + name;
  WritePlain(path, data, size);
  return path;
}

// Errors must be one line: a message with a newline would break the CLI's contract.
inline void CheckOneLine(const Status& s) {
  if (!s.ok() && s.message().find('\n') != std::string::npos) {
    std::fprintf(stderr, "multi-line error: %s\n", s.message().c_str());
    std::abort();
  }
}

// Reads (a bounded number of) every document's tokens, so that the readers' per-token checks run.
inline void ReadSomeTokens(const TokenSource& source) {
  int32_t buf[4096];
  int64_t budget = 1 << 16;
  for (int64_t d = 0; d < source.documents() && budget > 0; ++d) {
    const int64_t n = std::min<int64_t>({source.document_length(d), 4096, budget});
    CheckOneLine(source.CopyTokens(d, 0, n, buf));
    budget -= n + 1;
  }
}

}  // namespace indexcache::fuzz
