// TokenSource: a read-only collection of tokenised documents, whatever the file format.
//
// The trainer's data pipeline only ever asks three things of its data: how many documents there
// are, how long each one is, and the tokens [begin, end) of one document. Megatron indexed
// datasets (data/megatron_dataset.h), our own token shards (data/token_shard.h) and in-memory
// documents all answer those, so the sampler (data/sequence_sampler.h) works on any of them and on
// concatenations of them. OpenTokenSource (data/open_token_source.h) picks the reader by path.
//
// Readers are memory-mapped and never load a whole document unless asked to; CopyTokens converts
// the stored token type to int32 and reports token values that do not fit (or are negative) as a
// Status naming the file, since such files are damaged or were written with the wrong dtype.
//
// Implementations are immutable after opening, so one source may be shared across threads.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "core/status.h"

namespace indexcache {

class TokenSource {
 public:
  virtual ~TokenSource() = default;

  // Where the tokens come from (a path or a list of paths), for error messages.
  virtual std::string name() const = 0;
  virtual int64_t documents() const = 0;
  // Tokens in document `doc`; 0 <= doc < documents() is the caller's invariant (checked).
  virtual int64_t document_length(int64_t doc) const = 0;
  // Sum of document_length over all documents.
  virtual int64_t total_tokens() const = 0;
  // Copies tokens [begin, end) of document `doc` to out[0, end - begin). A range outside the
  // document is InvalidArgument; a stored value outside [0, INT32_MAX] is DataLoss naming the file.
  virtual Status CopyTokens(int64_t doc, int64_t begin, int64_t end, int32_t* out) const = 0;

  // Conveniences over CopyTokens.
  StatusOr<std::vector<int32_t>> ReadTokens(int64_t doc, int64_t begin, int64_t end) const;
  StatusOr<std::vector<int32_t>> ReadDocument(int64_t doc) const;
  StatusOr<int32_t> Token(int64_t doc, int64_t i) const;

 protected:
  // The shared argument check for CopyTokens implementations.
  Status CheckRange(int64_t doc, int64_t begin, int64_t end) const;
};

// Documents held in memory: for tests, and for small data such as a .npy token array.
class InMemoryTokenSource : public TokenSource {
 public:
  // Token ids must be non-negative (they are token ids); negative ones are an error naming `name`.
  static StatusOr<std::shared_ptr<InMemoryTokenSource>> Create(std::vector<std::vector<int32_t>> docs,
                                                               std::string name = "<memory>");
  std::string name() const override { return name_; }
  int64_t documents() const override { return static_cast<int64_t>(docs_.size()); }
  int64_t document_length(int64_t doc) const override;
  int64_t total_tokens() const override { return total_; }
  Status CopyTokens(int64_t doc, int64_t begin, int64_t end, int32_t* out) const override;

 private:
  InMemoryTokenSource() = default;
  std::string name_;
  std::vector<std::vector<int32_t>> docs_;
  int64_t total_ = 0;
};

// Several sources one after another: document i of the whole is document i - first(k) of part k.
// Documents never merge across parts.
class ConcatTokenSource : public TokenSource {
 public:
  // At least one part; the name is the parts' names joined with ','.
  static StatusOr<std::shared_ptr<ConcatTokenSource>> Create(std::vector<std::shared_ptr<TokenSource>> parts);
  std::string name() const override { return name_; }
  int64_t documents() const override { return first_doc_.back(); }
  int64_t document_length(int64_t doc) const override;
  int64_t total_tokens() const override { return total_; }
  Status CopyTokens(int64_t doc, int64_t begin, int64_t end, int32_t* out) const override;

  const std::vector<std::shared_ptr<TokenSource>>& parts() const { return parts_; }

 private:
  ConcatTokenSource() = default;
  // The part holding global document `doc`, and the document's index inside it.
  std::pair<size_t, int64_t> Locate(int64_t doc) const;
  std::string name_;
  std::vector<std::shared_ptr<TokenSource>> parts_;
  std::vector<int64_t> first_doc_;  // parts_.size() + 1 prefix sums of document counts
  int64_t total_ = 0;
};

}  // namespace indexcache
