// Token shards (*.ictok): indexcache's own file of tokenised documents, one file per shard.
//
// Layout, little-endian; every field is naturally aligned, so the reader maps the file and reads
// it in place:
//   offset  0   8 bytes    magic "ICTOKSH1"
//           8   u32        version (1)
//          12   u32        bytes per token: 2 (uint16 ids, vocabularies up to 65536) or 4 (uint32
//                          ids; values above INT32_MAX are refused on read)
//          16   u64        document count D
//          24   u64        token count T
//          32   u64[D+1]   document offsets in tokens: offsets[0] = 0, non-decreasing,
//                          offsets[D] = T; document d is tokens [offsets[d], offsets[d+1])
//   32 + 8(D+1) tokens[T]  (2 or 4 bytes each)
// The file ends right after the last token; any other size is an error.
//
// Compared with a Megatron dataset this is one self-describing file (no .idx/.bin pair that can
// drift apart) whose offsets give any document's length in O(1). See docs/data.md.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "core/file_util.h"
#include "core/status.h"
#include "data/token_source.h"

namespace indexcache {

constexpr char kTokenShardMagic[8] = {'I', 'C', 'T', 'O', 'K', 'S', 'H', '1'};
constexpr uint32_t kTokenShardVersion = 1;
constexpr uint64_t kTokenShardHeaderBytes = 32;

class TokenShard : public TokenSource {
 public:
  // Maps and validates the whole header and offset table (O(D)); tokens are checked as read.
  static StatusOr<std::shared_ptr<TokenShard>> Open(const std::string& path);

  std::string name() const override { return path_; }
  int64_t documents() const override { return doc_count_; }
  int64_t document_length(int64_t doc) const override;
  int64_t total_tokens() const override { return token_count_; }
  Status CopyTokens(int64_t doc, int64_t begin, int64_t end, int32_t* out) const override;

  int bytes_per_token() const { return bytes_per_token_; }
  // Offset in tokens of document `doc`'s first token; doc == documents() gives total_tokens().
  int64_t document_offset(int64_t doc) const;

 private:
  TokenShard() = default;
  std::string path_;
  std::shared_ptr<MappedFile> file_;
  int bytes_per_token_ = 2;
  int64_t doc_count_ = 0, token_count_ = 0;
  const uint8_t* offsets_ = nullptr;  // u64[D+1]
  const uint8_t* tokens_ = nullptr;
};

// Streams documents into a shard. Tokens go to an anonymous temporary file next to `path` (so
// memory stays O(documents) however large the shard), and Finish() writes the header, the offsets
// and then the tokens to `path` atomically (temp file, fsync, rename).
class TokenShardWriter {
 public:
  // bytes_per_token: 2 or 4.
  static StatusOr<std::unique_ptr<TokenShardWriter>> Create(const std::string& path, int bytes_per_token);
  ~TokenShardWriter();
  TokenShardWriter(const TokenShardWriter&) = delete;
  TokenShardWriter& operator=(const TokenShardWriter&) = delete;

  // Appends one document. Tokens must lie in [0, 65535] (2 bytes) or [0, INT32_MAX] (4 bytes);
  // otherwise an error naming the file, document and position (nothing is written).
  Status AddDocument(const int32_t* tokens, int64_t n);
  Status AddDocument(const std::vector<int32_t>& tokens) {
    return AddDocument(tokens.data(), static_cast<int64_t>(tokens.size()));
  }
  Status Finish();

  int64_t documents() const { return static_cast<int64_t>(offsets_.size()) - 1; }

 private:
  TokenShardWriter() = default;
  std::string path_;
  int bytes_per_token_ = 2;
  int spool_fd_ = -1;  // unlinked temporary file holding the tokens written so far
  std::vector<uint64_t> offsets_{0};
  bool finished_ = false;
};

// Writes `documents` as one shard.
Status WriteTokenShard(const std::string& path, const std::vector<std::vector<int32_t>>& documents,
                       int bytes_per_token);

}  // namespace indexcache
