#include "data/eval_windows.h"

#include <algorithm>

#include "data/open_token_source.h"
#include "data/token_array.h"

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

bool TokenRows::equal_lengths() const {
  for (const auto& r : rows) {
    if (r.size() != rows[0].size()) return false;
  }
  return true;
}

StatusOr<TokenRows> ReadTokenRows(const std::string& spec, int64_t vocab_size, int64_t max_rows, int64_t max_tokens) {
  TokenRows out;
  const bool npy = spec.size() > 4 && spec.compare(spec.size() - 4, 4, ".npy") == 0 && spec.find(',') == std::string::npos;
  if (npy) {
    ASSIGN_OR_RETURN(TokenArray a, ReadTokenArray(spec, vocab_size));
    if (a.rows() > max_rows || a.rows() * a.cols() > max_tokens) {
      return InvalidArgument(spec + ": " + std::to_string(a.rows()) + " rows of " + std::to_string(a.cols()) +
                             " tokens exceed the limit of " + std::to_string(max_rows) + " rows / " +
                             std::to_string(max_tokens) + " tokens");
    }
    out.one_dimensional = a.shape.size() == 1;
    for (int64_t r = 0; r < a.rows(); ++r) out.rows.push_back(a.Row(r));
  } else {
    ASSIGN_OR_RETURN(std::shared_ptr<TokenSource> source, OpenTokenSource(spec));
    if (source->documents() > max_rows || source->total_tokens() > max_tokens) {
      return InvalidArgument(source->name() + ": " + std::to_string(source->documents()) + " documents of " +
                             std::to_string(source->total_tokens()) + " tokens exceed the limit of " +
                             std::to_string(max_rows) + " rows / " + std::to_string(max_tokens) + " tokens");
    }
    for (int64_t doc = 0; doc < source->documents(); ++doc) {
      ASSIGN_OR_RETURN(std::vector<int32_t> ids, source->ReadDocument(doc));
      for (size_t i = 0; i < ids.size(); ++i) {
        if (ids[i] >= vocab_size) {
          return InvalidArgument(source->name() + ": document " + std::to_string(doc) + ", position " +
                                 std::to_string(i) + ": token id " + std::to_string(ids[i]) +
                                 " is outside the model's vocabulary [0, " + std::to_string(vocab_size) + ")");
        }
      }
      out.rows.push_back(std::move(ids));
    }
  }
  if (out.rows.empty() || out.rows[0].empty()) return InvalidArgument(spec + ": no tokens");
  for (size_t r = 0; r < out.rows.size(); ++r) {
    if (out.rows[r].empty()) return InvalidArgument(spec + ": document " + std::to_string(r) + " is empty");
  }
  return out;
}

}  // namespace indexcache
