// Files: read-only memory maps, whole-file reads, and atomic writes.
//
// An atomic write goes to `<path>.tmp.<pid>`, is fsynced, then renamed over `path` (and the parent
// directory fsynced), so a crash leaves either the old file or the new one, never half of one.
#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include "core/status.h"

namespace indexcache {

class MappedFile {
 public:
  static StatusOr<std::shared_ptr<MappedFile>> Open(const std::string& path);
  ~MappedFile();
  MappedFile(const MappedFile&) = delete;
  MappedFile& operator=(const MappedFile&) = delete;

  const uint8_t* data() const { return data_; }
  uint64_t size() const { return size_; }
  const std::string& path() const { return path_; }

 private:
  MappedFile() = default;
  std::string path_;
  uint8_t* data_ = nullptr;
  uint64_t size_ = 0;
};

StatusOr<std::string> ReadFileToString(const std::string& path);
bool FileExists(const std::string& path);
bool IsDirectory(const std::string& path);
std::string JoinPath(const std::string& a, const std::string& b);
std::string DirName(const std::string& path);

// Writes `size` bytes atomically (temp file, fsync, rename, fsync of the directory).
Status WriteFileAtomic(const std::string& path, const void* data, size_t size);
inline Status WriteFileAtomic(const std::string& path, const std::string& contents) {
  return WriteFileAtomic(path, contents.data(), contents.size());
}

// Streams pieces into a temp file; Commit() fsyncs and renames it over the target.
class AtomicFileWriter {
 public:
  static StatusOr<std::unique_ptr<AtomicFileWriter>> Create(const std::string& path);
  ~AtomicFileWriter();  // removes the temp file if Commit() never ran
  Status Write(const void* data, size_t size);
  Status Commit();

 private:
  AtomicFileWriter() = default;
  std::string path_, temp_path_;
  int fd_ = -1;
};

Status FsyncDirectory(const std::string& dir);

}  // namespace indexcache
