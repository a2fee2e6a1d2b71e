#include "data/eval_windows.h"

#include <algorithm>

#include "data/open_token_source.h"

namespace indexcache {

StatusOr<std::vector<EvalWindow>> ReadEvalWindows(const TokenSource& source, int64_t seq_len, int64_t max_seqs,
                                                  int64_t vocab_size) {
  if (seq_len < 2 || seq_len > kMaxEvalSeqLen) {
    return InvalidArgument("--seq-len must be in [2, " + std::to_string(kMaxEvalSeqLen) + "], got " +
                           std::to_string(seq_len));
  }
  if (max_seqs < 0) return InvalidArgument("--max-seqs must be >= 0");
  std::vector<EvalWindow> windows;
  int64_t longest = 0;
  for (int64_t doc = 0; doc < source.documents(); ++doc) {
    const int64_t length = source.document_length(doc);
    longest = std::max(longest, length);
    for (int64_t begin = 0; begin + seq_len <= length; begin += seq_len) {
      if (max_seqs > 0 && static_cast<int64_t>(windows.size()) >= max_seqs) return windows;
      EvalWindow w;
      w.document = doc;
      w.offset = begin;
      ASSIGN_OR_RETURN(w.tokens, source.ReadTokens(doc, begin, begin + seq_len));
      for (int64_t i = 0; i < seq_len; ++i) {
        if (w.tokens[i] >= vocab_size) {
          return InvalidArgument(source.name() + ": document " + std::to_string(doc) + ", position " +
                                 std::to_string(begin + i) + ": token id " + std::to_string(w.tokens[i]) +
                                 " is outside the model's vocabulary [0, " + std::to_string(vocab_size) + ")");
        }
      }
      windows.push_back(std::move(w));
    }
  }
  if (windows.empty()) {
    return InvalidArgument(source.name() + ": no complete sequence of --seq-len " + std::to_string(seq_len) +
                           " tokens (the longest document has " + std::to_string(longest) + ")");
  }
  return windows;
}

StatusOr<std::vector<EvalWindow>> ReadEvalWindows(const std::string& spec, int64_t seq_len, int64_t max_seqs,
                                                  int64_t vocab_size) {
  ASSIGN_OR_RETURN(std::shared_ptr<TokenSource> source, OpenTokenSource(spec));
  return ReadEvalWindows(*source, seq_len, max_seqs, vocab_size);
}

}  // namespace indexcache
