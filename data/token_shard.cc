#include "data/token_shard.h"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <limits>

namespace indexcache {

namespace {

constexpr int64_t kInt32Max = std::numeric_limits<int32_t>::max();

static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__, "the format is little-endian and read in place");

template <typename T>
T Load(const uint8_t* p) {
  T v;
  std::memcpy(&v, p, sizeof(T));
  return v;
}

std::string Errno() { return std::strerror(errno); }

}  // namespace

// ---- reader ----

StatusOr<std::shared_ptr<TokenShard>> TokenShard::Open(const std::string& path) {
  std::shared_ptr<TokenShard> s(new TokenShard());
  s->path_ = path;
  ASSIGN_OR_RETURN(s->file_, MappedFile::Open(path));
  const uint8_t* p = s->file_->data();
  const uint64_t size = s->file_->size();
  if (size < kTokenShardHeaderBytes) {
    return DataLoss(path + ": truncated header (" + std::to_string(size) + " bytes, need " +
                    std::to_string(kTokenShardHeaderBytes) + ")");
  }
  if (std::memcmp(p, kTokenShardMagic, sizeof(kTokenShardMagic)) != 0) {
    return DataLoss(path + ": bad magic (not an ICTOKSH1 token shard)");
  }
  const uint32_t version = Load<uint32_t>(p + 8), bpt = Load<uint32_t>(p + 12);
  if (version != kTokenShardVersion) {
    return Unimplemented(path + ": version " + std::to_string(version) + " (only version 1 is supported)");
  }
  if (bpt != 2 && bpt != 4) {
    return DataLoss(path + ": bytes per token is " + std::to_string(bpt) + " (byte offset 12), expected 2 or 4");
  }
  const uint64_t d = Load<uint64_t>(p + 16), t = Load<uint64_t>(p + 24);
  // Bound the counts by the file size before multiplying, so corrupt counts cannot overflow.
  const uint64_t room = size - kTokenShardHeaderBytes;
  const bool fits = d < room / 8 && t <= (room - 8 * (d + 1)) / bpt;
  if (!fits) {
    return DataLoss(path + ": truncated: " + std::to_string(d) + " documents and " + std::to_string(t) +
                    " tokens of " + std::to_string(bpt) + " bytes do not fit in " + std::to_string(size) + " bytes");
  }
  const uint64_t expected = kTokenShardHeaderBytes + 8 * (d + 1) + bpt * t;
  if (size != expected) {
    return DataLoss(path + ": " + std::to_string(size - expected) + " unexpected trailing bytes after " +
                    std::to_string(expected));
  }
  if (d > static_cast<uint64_t>(std::numeric_limits<int64_t>::max()) ||
      t > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) {
    return DataLoss(path + ": document or token count too large");  // unreachable below 8 EiB files
  }
  s->bytes_per_token_ = static_cast<int>(bpt);
  s->doc_count_ = static_cast<int64_t>(d);
  s->token_count_ = static_cast<int64_t>(t);
  s->offsets_ = p + kTokenShardHeaderBytes;
  s->tokens_ = s->offsets_ + 8 * (d + 1);

  uint64_t prev = Load<uint64_t>(s->offsets_);
  if (prev != 0) {
    return DataLoss(path + ": offsets[0] = " + std::to_string(prev) + " (byte offset 32), expected 0");
  }
  for (uint64_t j = 1; j <= d; ++j) {
    const uint64_t cur = Load<uint64_t>(s->offsets_ + 8 * j);
    if (cur < prev || cur > t) {
      return DataLoss(path + ": offsets[" + std::to_string(j) + "] = " + std::to_string(cur) + " (byte offset " +
                      std::to_string(kTokenShardHeaderBytes + 8 * j) + ") is " +
                      (cur < prev ? "less than offsets[" + std::to_string(j - 1) + "] = " + std::to_string(prev)
                                  : "greater than the token count " + std::to_string(t)));
    }
    prev = cur;
  }
  if (prev != t) {
    return DataLoss(path + ": offsets[" + std::to_string(d) + "] = " + std::to_string(prev) + " (byte offset " +
                    std::to_string(kTokenShardHeaderBytes + 8 * d) + "), expected the token count " +
                    std::to_string(t));
  }
  return s;
}

int64_t TokenShard::document_offset(int64_t doc) const {
  IC_CHECK(doc >= 0 && doc <= doc_count_);
  return static_cast<int64_t>(Load<uint64_t>(offsets_ + 8 * doc));
}

int64_t TokenShard::document_length(int64_t doc) const {
  IC_CHECK(doc >= 0 && doc < doc_count_);
  return document_offset(doc + 1) - document_offset(doc);
}

Status TokenShard::CopyTokens(int64_t doc, int64_t begin, int64_t end, int32_t* out) const {
  RETURN_IF_ERROR(CheckRange(doc, begin, end));
  const int64_t first = document_offset(doc) + begin, n = end - begin;
  if (bytes_per_token_ == 2) {
    const uint8_t* src = tokens_ + 2 * first;
    for (int64_t i = 0; i < n; ++i) out[i] = Load<uint16_t>(src + 2 * i);
    return Status::Ok();
  }
  const uint8_t* src = tokens_ + 4 * first;
  for (int64_t i = 0; i < n; ++i) {
    const uint32_t v = Load<uint32_t>(src + 4 * i);
    if (v > static_cast<uint32_t>(kInt32Max)) {
      const uint64_t byte = static_cast<uint64_t>(tokens_ - file_->data()) + 4 * static_cast<uint64_t>(first + i);
      return DataLoss(path_ + ": token " + std::to_string(v) + " at byte offset " + std::to_string(byte) +
                      " (document " + std::to_string(doc) + ", position " + std::to_string(begin + i) +
                      ") exceeds INT32_MAX");
    }
    out[i] = static_cast<int32_t>(v);
  }
  return Status::Ok();
}

// ---- writer ----

StatusOr<std::unique_ptr<TokenShardWriter>> TokenShardWriter::Create(const std::string& path, int bytes_per_token) {
  if (bytes_per_token != 2 && bytes_per_token != 4) {
    return InvalidArgument(path + ": bytes per token must be 2 or 4, got " + std::to_string(bytes_per_token));
  }
  std::unique_ptr<TokenShardWriter> w(new TokenShardWriter());
  w->path_ = path;
  w->bytes_per_token_ = bytes_per_token;
  // The spool lives next to the target (same file system, same space) and is unlinked at once,
  // so neither a crash nor an early return leaves it behind.
  std::string tmpl = path + ".spool.XXXXXX";
  std::vector<char> buf(tmpl.begin(), tmpl.end());
  buf.push_back('\0');
  w->spool_fd_ = ::mkstemp(buf.data());
  if (w->spool_fd_ < 0) return IoError(tmpl + ": " + Errno());
  ::unlink(buf.data());
  return w;
}

TokenShardWriter::~TokenShardWriter() {
  if (spool_fd_ >= 0) ::close(spool_fd_);
}

Status TokenShardWriter::AddDocument(const int32_t* tokens, int64_t n) {
  if (finished_) return Internal(path_ + ": AddDocument after Finish");
  const int64_t max = bytes_per_token_ == 2 ? 65535 : kInt32Max;
  std::vector<uint8_t> bytes(static_cast<size_t>(n) * bytes_per_token_);
  for (int64_t i = 0; i < n; ++i) {
    if (tokens[i] < 0 || tokens[i] > max) {
      return InvalidArgument(path_ + ": token " + std::to_string(tokens[i]) + " at position " + std::to_string(i) +
                             " of document " + std::to_string(documents()) + " does not fit " +
                             std::to_string(bytes_per_token_) + "-byte token ids [0, " + std::to_string(max) + "]");
    }
    const uint32_t v = static_cast<uint32_t>(tokens[i]);
    std::memcpy(bytes.data() + i * bytes_per_token_, &v, bytes_per_token_);
  }
  const uint8_t* p = bytes.data();
  size_t left = bytes.size();
  while (left > 0) {
    const ssize_t k = ::write(spool_fd_, p, left);
    if (k < 0) {
      if (errno == EINTR) continue;
      return IoError(path_ + ": writing the token spool failed: " + Errno());
    }
    p += k;
    left -= static_cast<size_t>(k);
  }
  offsets_.push_back(offsets_.back() + static_cast<uint64_t>(n));
  return Status::Ok();
}

Status TokenShardWriter::Finish() {
  if (finished_) return Internal(path_ + ": Finish called twice");
  finished_ = true;
  ASSIGN_OR_RETURN(auto out, AtomicFileWriter::Create(path_));
  const uint32_t version = kTokenShardVersion, bpt = static_cast<uint32_t>(bytes_per_token_);
  const uint64_t d = offsets_.size() - 1, t = offsets_.back();
  RETURN_IF_ERROR(out->Write(kTokenShardMagic, sizeof(kTokenShardMagic)));
  RETURN_IF_ERROR(out->Write(&version, 4));
  RETURN_IF_ERROR(out->Write(&bpt, 4));
  RETURN_IF_ERROR(out->Write(&d, 8));
  RETURN_IF_ERROR(out->Write(&t, 8));
  RETURN_IF_ERROR(out->Write(offsets_.data(), offsets_.size() * 8));
  // Copy the spooled tokens across in 4 MiB pieces.
  std::vector<uint8_t> buf(4 << 20);
  const uint64_t total = t * bpt;
  for (uint64_t done = 0; done < total;) {
    const ssize_t k = ::pread(spool_fd_, buf.data(), std::min<uint64_t>(buf.size(), total - done),
                              static_cast<off_t>(done));
    if (k < 0 && errno == EINTR) continue;
    if (k <= 0) return IoError(path_ + ": reading the token spool failed: " + (k < 0 ? Errno() : "short read"));
    RETURN_IF_ERROR(out->Write(buf.data(), static_cast<size_t>(k)));
    done += static_cast<uint64_t>(k);
  }
  return out->Commit();
}

Status WriteTokenShard(const std::string& path, const std::vector<std::vector<int32_t>>& documents,
                       int bytes_per_token) {
  ASSIGN_OR_RETURN(auto writer, TokenShardWriter::Create(path, bytes_per_token));
  for (const auto& doc : documents) RETURN_IF_ERROR(writer->AddDocument(doc));
  return writer->Finish();
}

}  // namespace indexcache
