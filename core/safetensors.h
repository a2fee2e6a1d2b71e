// safetensors: memory-mapped reading, multi-shard checkpoints, atomic writing.
//
// File layout: u64 little-endian header length N, N bytes of JSON mapping each tensor name to
// {"dtype", "shape", "data_offsets": [begin, end)} (offsets relative to the byte after the
// header), optional "__metadata__" of string pairs, then the raw little-endian data.
// Every check on a file's structure names the file, and the tensor where there is one.
#pragma once

#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "core/file_util.h"
#include "core/status.h"
#include "core/tensor.h"

namespace indexcache {

class SafetensorsFile {
 public:
  static StatusOr<std::shared_ptr<SafetensorsFile>> Open(const std::string& path);

  const std::string& path() const { return file_->path(); }
  std::vector<std::string> names() const;
  bool Has(const std::string& name) const { return entries_.count(name) != 0; }
  // A zero-copy view into the mapping; the tensor keeps the file mapped while it lives.
  StatusOr<Tensor> Get(const std::string& name) const;
  const std::map<std::string, std::string>& metadata() const { return metadata_; }

 private:
  struct Entry {
    DType dtype;
    Shape shape;
    uint64_t begin, end;  // absolute byte offsets in the file
  };
  std::shared_ptr<MappedFile> file_;
  std::map<std::string, Entry> entries_;
  std::map<std::string, std::string> metadata_;
};

// A model directory's weights: `model.safetensors.index.json` (weight_map: name -> shard file),
// or a single `model.safetensors`, or else every `*.safetensors` file in the directory.
class SafetensorsCheckpoint {
 public:
  static StatusOr<SafetensorsCheckpoint> Open(const std::string& dir);

  const std::string& dir() const { return dir_; }
  bool Has(const std::string& name) const { return shard_of_.count(name) != 0; }
  std::vector<std::string> names() const;
  // Errors name the shard file and the tensor.
  StatusOr<Tensor> Get(const std::string& name) const;
  // The shard file (relative to dir) holding `name`; empty if absent.
  std::string ShardOf(const std::string& name) const;
  // Shard files in the directory, relative names, sorted.
  std::vector<std::string> shard_files() const;

 private:
  StatusOr<std::shared_ptr<SafetensorsFile>> Shard(const std::string& file) const;
  std::string dir_;
  std::map<std::string, std::string> shard_of_;  // tensor -> shard file (relative)
  mutable std::map<std::string, std::shared_ptr<SafetensorsFile>> shards_;
};

using NamedTensors = std::vector<std::pair<std::string, Tensor>>;

// Writes tensors (contiguous, host) atomically; names must be unique.
Status WriteSafetensors(const std::string& path, const NamedTensors& tensors,
                        const std::map<std::string, std::string>& metadata = {});

}  // namespace indexcache
