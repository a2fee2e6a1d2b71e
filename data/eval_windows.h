// Evaluation windows: token data cut into the fixed-length sequences that eval and the pattern
// search score. Every command that scores a model reads its data through here, so every token
// source `train` reads (.npy, Megatron prefix, .ictok, lists of them; data/open_token_source.h)
// works everywhere and the windows are the same for eval and search.
//
// Each document (a .npy row, a Megatron document, a shard document) is cut into non-overlapping
// windows of seq_len tokens from its start; an incomplete tail is dropped and a window never
// crosses documents. Windows come in document order; max_seqs > 0 keeps the first max_seqs.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "core/status.h"
#include "data/token_source.h"

namespace indexcache {

struct EvalWindow {
  int64_t document = 0;         // index in the source
  int64_t offset = 0;           // first token's position in the document
  std::vector<int32_t> tokens;  // seq_len ids, each in [0, vocab)
};

// The largest --seq-len accepted (4M tokens): far beyond any DSA context, small enough that
// sizes derived from it cannot overflow.
constexpr int64_t kMaxEvalSeqLen = int64_t{1} << 22;

// Cuts `source` into windows (see above). Errors name the source: seq_len outside
// [2, kMaxEvalSeqLen], no complete window, a token id outside [0, vocab_size) (with its document
// and position).
StatusOr<std::vector<EvalWindow>> ReadEvalWindows(const TokenSource& source, int64_t seq_len, int64_t max_seqs,
                                                  int64_t vocab_size);

// Opens `spec` with OpenTokenSource and cuts it.
StatusOr<std::vector<EvalWindow>> ReadEvalWindows(const std::string& spec, int64_t seq_len, int64_t max_seqs,
                                                  int64_t vocab_size);

// Whole documents as rows, for `logits` and `generate` (each row runs from position 0). A single
// .npy keeps its shape ([T]: one row, one_dimensional; [B, T]: B rows) and its existing messages;
// any other spec opens through OpenTokenSource, one row per document. At most max_rows rows and
// max_tokens tokens in all (both > 0); ids must lie in [0, vocab_size).
struct TokenRows {
  std::vector<std::vector<int32_t>> rows;
  bool one_dimensional = false;  // a .npy of shape [T]
  bool equal_lengths() const;
};
StatusOr<TokenRows> ReadTokenRows(const std::string& spec, int64_t vocab_size, int64_t max_rows, int64_t max_tokens);

}  // namespace indexcache
