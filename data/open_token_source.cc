#include "data/open_token_source.h"

#include <cstring>
#include <vector>

#include "core/file_util.h"
#include "data/megatron_dataset.h"
#include "data/token_array.h"
#include "data/token_shard.h"

namespace indexcache {

namespace {

bool EndsWith(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

bool HasShardMagic(const std::string& path) {
  auto file = MappedFile::Open(path);
  return file.ok() && (*file)->size() >= sizeof(kTokenShardMagic) &&
         std::memcmp((*file)->data(), kTokenShardMagic, sizeof(kTokenShardMagic)) == 0;
}

StatusOr<std::shared_ptr<TokenSource>> OpenOne(const std::string& path) {
  if (EndsWith(path, ".ictok")) {
    ASSIGN_OR_RETURN(auto shard, TokenShard::Open(path));
    return std::shared_ptr<TokenSource>(shard);
  }
  if (EndsWith(path, ".npy")) {
    // Rows of a [B, T] array are documents, as in `indexcache eval`.
    ASSIGN_OR_RETURN(TokenArray array, ReadTokenArray(path, /*vocab_size=*/0));
    std::vector<std::vector<int32_t>> docs;
    for (int64_t r = 0; r < array.rows(); ++r) docs.push_back(array.Row(r));
    ASSIGN_OR_RETURN(auto mem, InMemoryTokenSource::Create(std::move(docs), path));
    return std::shared_ptr<TokenSource>(mem);
  }
  std::string prefix;
  if (EndsWith(path, ".idx") || EndsWith(path, ".bin")) {
    prefix = path.substr(0, path.size() - 4);
  } else if (FileExists(path + ".idx")) {
    prefix = path;
  }
  if (!prefix.empty()) {
    ASSIGN_OR_RETURN(auto megatron, MegatronDataset::Open(prefix));
    return std::shared_ptr<TokenSource>(megatron);
  }
  if (FileExists(path) && HasShardMagic(path)) {
    ASSIGN_OR_RETURN(auto shard, TokenShard::Open(path));
    return std::shared_ptr<TokenSource>(shard);
  }
  if (FileExists(path)) {
    return InvalidArgument(path + ": not a token shard (*.ictok), Megatron dataset (.idx/.bin) or .npy token array");
  }
  return NotFound(path + ": no such token shard, and no Megatron dataset " + path + ".idx");
}

}  // namespace

StatusOr<std::shared_ptr<TokenSource>> OpenTokenSource(const std::string& spec) {
  std::vector<std::string> paths;
  size_t start = 0;
  while (true) {
    const size_t comma = spec.find(',', start);
    paths.push_back(spec.substr(start, comma == std::string::npos ? std::string::npos : comma - start));
    if (comma == std::string::npos) break;
    start = comma + 1;
  }
  for (size_t k = 0; k < paths.size(); ++k) {
    if (paths[k].empty()) {
      return InvalidArgument("token source list '" + spec + "': entry " + std::to_string(k) + " is empty");
    }
  }
  if (paths.size() == 1) return OpenOne(paths[0]);
  std::vector<std::shared_ptr<TokenSource>> parts;
  for (const auto& path : paths) {
    ASSIGN_OR_RETURN(auto part, OpenOne(path));
    parts.push_back(std::move(part));
  }
  ASSIGN_OR_RETURN(auto concat, ConcatTokenSource::Create(std::move(parts)));
  return std::shared_ptr<TokenSource>(concat);
}

}  // namespace indexcache
