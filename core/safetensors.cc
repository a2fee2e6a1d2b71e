#include "core/safetensors.h"

#include <dirent.h>

#include <algorithm>
#include <cstring>
#include <limits>
#include <set>
#include <tuple>

#include <nlohmann/json.hpp>

#include "core/json_util.h"

namespace indexcache {

using json = nlohmann::json;

namespace {
// A header over 100 MB is not a real checkpoint; the same bound the reference library uses.
constexpr uint64_t kMaxHeaderBytes = 100ull << 20;

// A shard name from model.safetensors.index.json must be a plain file name inside the model
// directory: no separators, no "..", not absolute. Otherwise the readers would open any file the
// index names (/etc/passwd) and `export`, which rewrites shards under --out, would write outside it.
Status CheckShardName(const std::string& index_path, const std::string& tensor, const std::string& file) {
  const bool plain = !file.empty() && file != "." && file != ".." && file.find('/') == std::string::npos &&
                     file.find('\\') == std::string::npos &&
                     std::none_of(file.begin(), file.end(), [](char c) { return static_cast<unsigned char>(c) < 0x20 || c == 0x7f; });
  if (plain) return Status::Ok();
  json shown = file.substr(0, 80);
  return DataLoss(index_path + ": weight_map['" + Printable(tensor, 120) + "'] names shard " +
                  shown.dump(-1, ' ', false, json::error_handler_t::replace) +
                  ", which is not a plain file name in the model directory");
}
}  // namespace

StatusOr<std::shared_ptr<SafetensorsFile>> SafetensorsFile::Open(const std::string& path) {
  ASSIGN_OR_RETURN(auto file, MappedFile::Open(path));
  if (file->size() < 8) {
    return DataLoss(path + ": truncated safetensors file (" + std::to_string(file->size()) +
                    " bytes, need at least 8 for the header length)");
  }
  uint64_t header_len;
  std::memcpy(&header_len, file->data(), 8);
  if (header_len > file->size() - 8) {
    return DataLoss(path + ": header length " + std::to_string(header_len) +
                    " runs past the end of the file (" + std::to_string(file->size()) + " bytes)");
  }
  if (header_len > kMaxHeaderBytes) {
    return DataLoss(path + ": header length " + std::to_string(header_len) + " is implausibly large");
  }
  json header = json::parse(file->data() + 8, file->data() + 8 + header_len, nullptr, false);
  if (header.is_discarded() || !header.is_object()) {
    return DataLoss(path + ": malformed safetensors header (not a JSON object)");
  }
  auto st = std::shared_ptr<SafetensorsFile>(new SafetensorsFile());
  st->file_ = file;
  const uint64_t data_start = 8 + header_len;
  const uint64_t data_size = file->size() - data_start;
  // (begin, end, name) of every tensor, to check that together they tile the data section.
  std::vector<std::tuple<uint64_t, uint64_t, std::string>> spans;
  for (auto it = header.begin(); it != header.end(); ++it) {
    const std::string& name = it.key();
    const json& v = it.value();
    if (name == "__metadata__") {
      if (!v.is_object()) return DataLoss(path + ": __metadata__ is not an object");
      for (auto m = v.begin(); m != v.end(); ++m) {
        if (!m.value().is_string()) return DataLoss(path + ": __metadata__ value '" + m.key() + "' is not a string");
        st->metadata_[m.key()] = m.value().get<std::string>();
      }
      continue;
    }
    const std::string where = path + ": tensor '" + name + "'";
    if (!v.is_object() || !v.contains("dtype") || !v.contains("shape") || !v.contains("data_offsets") ||
        !v["dtype"].is_string() || !v["shape"].is_array() || !v["data_offsets"].is_array() ||
        v["data_offsets"].size() != 2) {
      return DataLoss(where + ": malformed header entry (need dtype, shape, data_offsets)");
    }
    Entry e;
    auto dtype = DTypeFromSafetensorsName(v["dtype"].get<std::string>());
    if (!dtype.ok()) return DataLoss(where + ": " + dtype.status().message());
    e.dtype = *dtype;
    uint64_t numel = 1;
    for (const json& d : v["shape"]) {
      if (!d.is_number_unsigned()) return DataLoss(where + ": shape has a non-integer or negative dimension");
      const uint64_t dim = d.get<uint64_t>();
      if (dim != 0 && numel > std::numeric_limits<uint64_t>::max() / dim / 8) {
        return DataLoss(where + ": shape overflows");
      }
      numel *= dim;
      e.shape.push_back(static_cast<int64_t>(dim));
    }
    const json& off = v["data_offsets"];
    if (!off[0].is_number_unsigned() || !off[1].is_number_unsigned()) {
      return DataLoss(where + ": data_offsets are not non-negative integers");
    }
    const uint64_t begin = off[0].get<uint64_t>(), end = off[1].get<uint64_t>();
    if (begin > end || end > data_size) {
      return DataLoss(where + ": data_offsets [" + std::to_string(begin) + ", " + std::to_string(end) +
                      ") outside the " + std::to_string(data_size) + "-byte data section (truncated file?)");
    }
    const uint64_t expected = numel * static_cast<uint64_t>(DTypeSize(e.dtype));
    if (end - begin != expected) {
      return DataLoss(where + ": " + std::to_string(end - begin) + " bytes for shape " +
                      ShapeToString(e.shape) + " of " + DTypeName(e.dtype) + " (expected " +
                      std::to_string(expected) + ")");
    }
    e.begin = data_start + begin;
    e.end = data_start + end;
    spans.emplace_back(begin, end, name);
    st->entries_.emplace(name, std::move(e));
  }
  // As the reference implementation requires: sorted by offset, the tensors' byte ranges are
  // contiguous, start at 0 and end exactly at the end of the file. Overlapping, gapped or shifted
  // offsets would otherwise load some other tensor's bytes (or padding) without any error.
  std::sort(spans.begin(), spans.end());
  uint64_t expected_begin = 0;
  for (const auto& [begin, end, name] : spans) {
    if (begin != expected_begin) {
      return DataLoss(path + ": tensor '" + name + "': invalid data_offsets [" + std::to_string(begin) + ", " +
                      std::to_string(end) + "): " + (begin < expected_begin ? "overlaps" : "leaves a gap after") +
                      " the previous tensor (expected to start at " + std::to_string(expected_begin) + ")");
    }
    expected_begin = end;
  }
  if (expected_begin != data_size) {
    return DataLoss(path + ": invalid data_offsets: the tensors cover " + std::to_string(expected_begin) + " of the " +
                    std::to_string(data_size) + " bytes after the header");
  }
  return st;
}

std::vector<std::string> SafetensorsFile::names() const {
  std::vector<std::string> out;
  for (const auto& kv : entries_) out.push_back(kv.first);
  return out;
}

StatusOr<Tensor> SafetensorsFile::Get(const std::string& name) const {
  auto it = entries_.find(name);
  if (it == entries_.end()) return NotFound(path() + ": no tensor '" + name + "'");
  const Entry& e = it->second;
  // Mapped pages are read-only; the const_cast only satisfies Tensor's pointer type.
  void* data = const_cast<uint8_t*>(file_->data() + e.begin);
  // The format does not align tensors (a header of odd length puts them at odd offsets), while
  // readers use typed pointers: such a tensor is returned as an aligned copy instead of a view.
  if (reinterpret_cast<uintptr_t>(data) % static_cast<uintptr_t>(DTypeSize(e.dtype)) != 0) {
    Tensor copy = Tensor::Zeros(e.dtype, e.shape);
    std::memcpy(copy.raw(), data, e.end - e.begin);
    return copy;
  }
  return Tensor::View(e.dtype, e.shape, data, file_);
}

StatusOr<SafetensorsCheckpoint> SafetensorsCheckpoint::Open(const std::string& dir) {
  if (!IsDirectory(dir)) return NotFound(dir + ": not a directory");
  SafetensorsCheckpoint ckpt;
  ckpt.dir_ = dir;
  const std::string index_path = JoinPath(dir, "model.safetensors.index.json");
  if (FileExists(index_path)) {
    ASSIGN_OR_RETURN(std::string text, ReadFileToString(index_path));
    json index = json::parse(text, nullptr, /*allow_exceptions=*/false);
    if (index.is_discarded() || !index.is_object() || !index.contains("weight_map") ||
        !index["weight_map"].is_object()) {
      return DataLoss(index_path + ": malformed index (need an object 'weight_map')");
    }
    for (auto it = index["weight_map"].begin(); it != index["weight_map"].end(); ++it) {
      if (!it.value().is_string()) {
        return DataLoss(index_path + ": weight_map['" + it.key().substr(0, 120) + "'] is not a string (got " +
                        JsonBrief(it.value()) + ")");
      }
      RETURN_IF_ERROR(CheckShardName(index_path, it.key(), it.value().get<std::string>()));
      ckpt.shard_of_[it.key()] = it.value().get<std::string>();
    }
    // Shards open lazily, but a shard the index names and the directory lacks (an incomplete
    // download) is reported now, naming the index, the shard and one tensor it should hold.
    std::set<std::string> checked;
    for (const auto& [name, file] : ckpt.shard_of_) {
      if (!checked.insert(file).second) continue;
      const std::string shard_path = JoinPath(dir, file);
      if (!FileExists(shard_path)) {
        return NotFound(index_path + ": shard '" + Printable(file) + "' (holding tensor '" + Printable(name) +
                        "') not found at " + Printable(shard_path, 200));
      }
    }
    return ckpt;
  }
  std::vector<std::string> files;
  if (FileExists(JoinPath(dir, "model.safetensors"))) {
    files.push_back("model.safetensors");
  } else if (DIR* d = ::opendir(dir.c_str())) {
    while (dirent* ent = ::readdir(d)) {
      const std::string n = ent->d_name;
      if (n.size() > 12 && n.compare(n.size() - 12, 12, ".safetensors") == 0) files.push_back(n);
    }
    ::closedir(d);
    std::sort(files.begin(), files.end());
  }
  if (files.empty()) return NotFound(dir + ": no model.safetensors, index or *.safetensors file");
  for (const std::string& f : files) {
    ASSIGN_OR_RETURN(auto shard, SafetensorsFile::Open(JoinPath(dir, f)));
    for (const std::string& n : shard->names()) {
      auto [it, inserted] = ckpt.shard_of_.emplace(n, f);
      if (!inserted) {
        return DataLoss(dir + ": tensor '" + n + "' appears in both '" + it->second + "' and '" + f + "'");
      }
    }
    ckpt.shards_[f] = shard;
  }
  return ckpt;
}

std::vector<std::string> SafetensorsCheckpoint::names() const {
  std::vector<std::string> out;
  for (const auto& kv : shard_of_) out.push_back(kv.first);
  return out;
}

std::string SafetensorsCheckpoint::ShardOf(const std::string& name) const {
  auto it = shard_of_.find(name);
  return it == shard_of_.end() ? std::string() : it->second;
}

std::vector<std::string> SafetensorsCheckpoint::shard_files() const {
  std::set<std::string> files;
  for (const auto& kv : shard_of_) files.insert(kv.second);
  return {files.begin(), files.end()};
}

StatusOr<std::shared_ptr<SafetensorsFile>> SafetensorsCheckpoint::Shard(const std::string& file) const {
  auto it = shards_.find(file);
  if (it != shards_.end()) return it->second;
  ASSIGN_OR_RETURN(auto shard, SafetensorsFile::Open(JoinPath(dir_, file)));
  shards_[file] = shard;
  return shard;
}

StatusOr<Tensor> SafetensorsCheckpoint::Get(const std::string& name) const {
  auto it = shard_of_.find(name);
  if (it == shard_of_.end()) return NotFound(dir_ + ": missing tensor '" + name + "'");
  auto shard = Shard(it->second);
  // The shard's own error names its path; add the tensor that was asked for.
  if (!shard.ok()) return shard.status().WithContext("tensor '" + name + "'");
  return (*shard)->Get(name);
}

Status WriteSafetensors(const std::string& path, const NamedTensors& tensors,
                        const std::map<std::string, std::string>& metadata) {
  json header = json::object();
  if (!metadata.empty()) header["__metadata__"] = metadata;
  uint64_t offset = 0;
  std::set<std::string> seen;
  for (const auto& [name, t] : tensors) {
    if (!seen.insert(name).second) return InvalidArgument(path + ": duplicate tensor '" + name + "'");
    if (name == "__metadata__") return InvalidArgument(path + ": '__metadata__' is reserved, not a tensor name");
    if (t.empty()) return InvalidArgument(path + ": tensor '" + name + "' has no data");
    if (!t.is_contiguous() || t.device() != Device::kCpu) {
      return InvalidArgument(path + ": tensor '" + name + "' must be a contiguous host tensor");
    }
    const uint64_t n = static_cast<uint64_t>(t.nbytes());
    header[name] = {{"dtype", DTypeName(t.dtype())}, {"shape", t.shape()}, {"data_offsets", {offset, offset + n}}};
    offset += n;
  }
  std::string text;
  try {
    text = header.dump();
  } catch (const json::exception& e) {  // names or metadata that are not valid UTF-8
    return InvalidArgument(path + ": cannot encode safetensors header: " + e.what());
  }
  // Pad the header with spaces so the data section starts 8-byte aligned, as the format allows.
  while ((8 + text.size()) % 8 != 0) text.push_back(' ');
  const uint64_t len = text.size();
  ASSIGN_OR_RETURN(auto writer, AtomicFileWriter::Create(path));
  RETURN_IF_ERROR(writer->Write(&len, 8));
  RETURN_IF_ERROR(writer->Write(text.data(), text.size()));
  for (const auto& [name, t] : tensors) RETURN_IF_ERROR(writer->Write(t.raw(), static_cast<size_t>(t.nbytes())));
  return writer->Commit();
}

}  // namespace indexcache
