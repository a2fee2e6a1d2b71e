#include "trainer/export.h"

#include <dirent.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmath>
#include <cstring>
#include <map>

#include <nlohmann/json.hpp>

#include "core/file_util.h"
#include "core/safetensors.h"
#include "trainer/fs_util.h"
#include "model/config.h"

namespace indexcache {

namespace {

using json = nlohmann::json;

bool StartsWith(const std::string& s, const std::string& p) { return s.compare(0, p.size(), p) == 0; }
bool EndsWith(const std::string& s, const std::string& p) {
  return s.size() >= p.size() && s.compare(s.size() - p.size(), p.size(), p) == 0;
}

// The trained value for a tensor name, if it is one of a trained layer's indexer tensors.
const float* TrainedData(const IndexerSet& trained, const std::string& name, int64_t* numel) {
  for (const auto& [layer, w] : trained) {
    const std::string p = IndexerTensorPrefix(layer);
    if (!StartsWith(name, p)) continue;
    const std::string rest = name.substr(p.size());
    const auto set = [&](const float* d, int64_t n) { *numel = n; return d; };
    if (rest == "wq_b.weight") return set(w.wq_b.data(), w.wq_b.size());
    if (rest == "wk.weight") return set(w.wk.data(), w.wk.size());
    if (rest == "k_norm.weight") return set(w.k_norm_weight.data(), w.k_norm_weight.size());
    if (rest == "k_norm.bias") return set(w.k_norm_bias.data(), w.k_norm_bias.size());
    if (rest == "weights_proj.weight") return set(w.weights_proj.data(), w.weights_proj.size());
  }
  return nullptr;
}

// `values` in `dtype` (F32/F64/BF16/F16), or FP8 e4m3 with block scales written to *scale.
Status Encode(const float* values, const Tensor& original, const QuantConfig& quant, Tensor* out, Tensor* scale) {
  const int64_t n = original.numel();
  *out = Tensor::Zeros(original.dtype(), original.shape());
  switch (original.dtype()) {
    case DType::kF32: std::memcpy(out->raw(), values, n * 4); return Status::Ok();
    case DType::kF64:
      for (int64_t i = 0; i < n; ++i) out->data<double>()[i] = values[i];
      return Status::Ok();
    case DType::kBF16:
      for (int64_t i = 0; i < n; ++i) out->data<uint16_t>()[i] = FloatToBf16(values[i]);
      return Status::Ok();
    case DType::kF16:
      for (int64_t i = 0; i < n; ++i) out->data<uint16_t>()[i] = FloatToF16(values[i]);
      return Status::Ok();
    case DType::kF8E4M3: {
      if (original.dim() != 2) return InvalidArgument("FP8 tensor of rank " + std::to_string(original.dim()));
      const int64_t rows = original.size(0), cols = original.size(1), br = quant.block_rows, bc = quant.block_cols;
      const int64_t nr = (rows + br - 1) / br, nc = (cols + bc - 1) / bc;
      *scale = Tensor::Zeros(DType::kF32, {nr, nc});
      for (int64_t bi = 0; bi < nr; ++bi) {
        for (int64_t bj = 0; bj < nc; ++bj) {
          float amax = 0.0f;
          for (int64_t r = bi * br; r < std::min(rows, (bi + 1) * br); ++r) {
            for (int64_t c = bj * bc; c < std::min(cols, (bj + 1) * bc); ++c) amax = std::max(amax, std::fabs(values[r * cols + c]));
          }
          const float s = amax > 0 ? amax / 448.0f : 1.0f;
          scale->data<float>()[bi * nc + bj] = s;
          for (int64_t r = bi * br; r < std::min(rows, (bi + 1) * br); ++r) {
            for (int64_t c = bj * bc; c < std::min(cols, (bj + 1) * bc); ++c) {
              out->data<uint8_t>()[r * cols + c] = FloatToFp8E4M3(values[r * cols + c] / s);
            }
          }
        }
      }
      return Status::Ok();
    }
    default:
      return InvalidArgument(std::string("cannot export into dtype ") + DTypeName(original.dtype()));
  }
}

Status CopyFile(const std::string& from, const std::string& to) {
  ASSIGN_OR_RETURN(std::string data, ReadFileToString(from));
  return WriteFileAtomic(to, data);
}

}  // namespace

std::string IndexerTensorPrefix(int layer) { return "model.layers." + std::to_string(layer) + ".self_attn.indexer."; }

Status ExportModel(const std::string& model_dir, const IndexerSet& trained, const IndexPattern& pattern,
                   const ExportOptions& options, const std::string& out_dir) {
  ASSIGN_OR_RETURN(ModelConfig config, LoadModelConfig(model_dir));
  if (pattern.num_layers() != config.num_layers) return InvalidArgument("pattern length does not match the model");
  ASSIGN_OR_RETURN(SafetensorsCheckpoint ckpt, SafetensorsCheckpoint::Open(model_dir));
  for (int l = 0; l < pattern.num_layers(); ++l) {
    // A Full layer without trained weights keeps the checkpoint's indexer, which must exist.
    const std::string probe = IndexerTensorPrefix(l) + "wk.weight";
    if (pattern.is_full(l) && !trained.count(l) && !ckpt.Has(probe)) {
      return InvalidArgument(model_dir + ": layer " + std::to_string(l) + " is Full but neither the checkpoint nor "
                             "the trained set has its indexer ('" + probe + "')");
    }
  }
  if (FileExists(out_dir) || IsDirectory(out_dir)) return InvalidArgument(out_dir + ": already exists");
  const std::string tmp = out_dir + ".tmp." + std::to_string(::getpid());
  if (::mkdir(tmp.c_str(), 0755) != 0) return IoError(tmp + ": cannot create directory");
  // Whatever ends the export early (an error return or an exception such as AllocationError),
  // the partial output goes with it: only a complete directory is ever renamed to out_dir.
  struct RemoveUnlessCommitted {
    const std::string& path;
    bool committed = false;
    ~RemoveUnlessCommitted() {
      if (!committed) (void)RemoveTree(path);
    }
  } cleanup{tmp};

  // 1. Shards: same names, trained indexers swapped in, Shared layers' indexers optionally dropped.
  std::map<std::string, std::string> weight_map;
  uint64_t total_size = 0;
  for (const std::string& shard : ckpt.shard_files()) {
    ASSIGN_OR_RETURN(auto file, SafetensorsFile::Open(JoinPath(model_dir, shard)));
    NamedTensors tensors;
    for (const std::string& name : file->names()) {
      bool shared_indexer = false;
      for (int l = 0; l < pattern.num_layers(); ++l) {
        if (!pattern.is_full(l) && StartsWith(name, IndexerTensorPrefix(l))) shared_indexer = true;
      }
      if (shared_indexer && options.drop_shared_indexers) continue;
      int64_t unused = 0;
      if (EndsWith(name, "_scale_inv") && !shared_indexer &&
          TrainedData(trained, name.substr(0, name.size() - 10), &unused)) {
        continue;  // written again together with its re-quantised weight
      }
      ASSIGN_OR_RETURN(Tensor t, file->Get(name));
      int64_t numel = 0;
      const float* values = TrainedData(trained, name, &numel);
      if (values && !shared_indexer) {
        if (numel != t.numel()) return InvalidArgument(shard + ": tensor '" + name + "' has a different size than the trained one");
        Tensor encoded, scale;
        RETURN_IF_ERROR(Encode(values, t, config.quant, &encoded, &scale).WithContext(shard + ": tensor '" + name + "'"));
        tensors.push_back({name, encoded});
        if (!scale.empty()) tensors.push_back({name + "_scale_inv", scale});
      } else {
        tensors.push_back({name, t});
      }
    }
    for (const auto& [name, t] : tensors) {
      weight_map[name] = shard;
      total_size += t.nbytes();
    }
    RETURN_IF_ERROR(WriteSafetensors(JoinPath(tmp, shard), tensors, file->metadata()));
  }
  const json index = {{"metadata", {{"total_size", total_size}}}, {"weight_map", weight_map}};
  // error_handler_t::replace: names that are not valid UTF-8 must not throw out of dump().
  RETURN_IF_ERROR(WriteFileAtomic(JoinPath(tmp, "model.safetensors.index.json"),
                                  index.dump(2, ' ', false, json::error_handler_t::replace)));

  // 2. config.json with the pattern keys.
  ASSIGN_OR_RETURN(std::string text, ReadFileToString(JoinPath(model_dir, "config.json")));
  json cfg = json::parse(text, nullptr, false);
  if (cfg.is_discarded()) return InvalidArgument(model_dir + "/config.json: malformed JSON");
  cfg["index_topk_pattern"] = pattern.ToString();
  json types = json::array();
  for (int l = 0; l < pattern.num_layers(); ++l) types.push_back(pattern.is_full(l) ? "full" : "shared");
  cfg["indexer_types"] = types;
  int freq = 0, offset = 0;
  if (pattern.AsFrequency(&freq, &offset)) {
    cfg["index_topk_freq"] = freq;
    cfg["index_skip_topk_offset"] = offset;
  } else {
    cfg.erase("index_topk_freq");
    cfg.erase("index_skip_topk_offset");
  }
  RETURN_IF_ERROR(WriteFileAtomic(JoinPath(tmp, "config.json"), cfg.dump(2, ' ', false, json::error_handler_t::replace)));

  // 3. Everything else (tokenizer, generation config, ...) as it is.
  if (DIR* d = ::opendir(model_dir.c_str())) {
    while (dirent* e = ::readdir(d)) {
      const std::string n = e->d_name;
      if (n == "." || n == ".." || n == "config.json" || n == "model.safetensors.index.json" || EndsWith(n, ".safetensors")) continue;
      if (FileExists(JoinPath(model_dir, n))) {
        Status s = CopyFile(JoinPath(model_dir, n), JoinPath(tmp, n));
        if (!s.ok()) {
          ::closedir(d);
          return s;
        }
      }
    }
    ::closedir(d);
  }
  RETURN_IF_ERROR(FsyncDirectory(tmp));
  if (::rename(tmp.c_str(), out_dir.c_str()) != 0) return IoError(out_dir + ": rename failed");
  cleanup.committed = true;
  return FsyncDirectory(DirName(out_dir));
}

}  // namespace indexcache
