#include "trainer/export.h"

#include <dirent.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
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
Status Encode(const float* values, const Tensor& original, DType dtype, const QuantConfig& quant, Tensor* out,
              Tensor* scale) {
  const int64_t n = original.numel();
  *out = Tensor::Zeros(dtype, original.shape());
  switch (dtype) {
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
      return InvalidArgument(std::string("cannot export into dtype ") + DTypeName(dtype));
  }
}

// The dtype a trained tensor is written in. bf16 turns the FP8-stored matrices into bf16 and
// leaves higher-precision ones alone; fp8 quantises wq_b and wk, the indexer matrices DeepSeek's
// FP8 release quantises (weights_proj and k_norm keep their dtype).
DType TargetDType(const std::string& name, const Tensor& original, IndexerDType option) {
  if (original.dim() != 2) return original.dtype();
  switch (option) {
    case IndexerDType::kCheckpoint: return original.dtype();
    case IndexerDType::kBf16: return original.dtype() == DType::kF8E4M3 ? DType::kBF16 : original.dtype();
    case IndexerDType::kFp8:
      return EndsWith(name, ".wq_b.weight") || EndsWith(name, ".wk.weight") ? DType::kF8E4M3 : original.dtype();
  }
  return original.dtype();
}

// Side files a Hugging Face model directory carries besides config and weights.
bool IsSideFile(const std::string& n) {
  for (const char* ext : {".json", ".txt", ".model", ".tiktoken", ".py", ".jinja", ".md"}) {
    if (EndsWith(n, ext)) return true;
  }
  return StartsWith(n, "LICENSE") || StartsWith(n, "LICENCE") || StartsWith(n, "NOTICE");
}

Status CopyFile(const std::string& from, const std::string& to) {
  ASSIGN_OR_RETURN(std::string data, ReadFileToString(from));
  return WriteFileAtomic(to, data);
}

}  // namespace

std::string IndexerTensorPrefix(int layer) { return "model.layers." + std::to_string(layer) + ".self_attn.indexer."; }

StatusOr<IndexerDType> ParseIndexerDType(const std::string& name) {
  if (name == "checkpoint") return IndexerDType::kCheckpoint;
  if (name == "bf16") return IndexerDType::kBf16;
  if (name == "fp8") return IndexerDType::kFp8;
  return InvalidArgument("--indexer-dtype must be checkpoint, bf16 or fp8, got '" + name + "'");
}

StatusOr<std::vector<std::string>> CheckExport(const ModelConfig& config, const IndexerSet& trained,
                                               const IndexPattern& pattern, const ExportOptions& options) {
  std::vector<std::string> warnings;
  const bool any_shared = pattern.num_full() < pattern.num_layers();
  if (config.model_type == ModelType::kDeepseekV32 && any_shared) {
    if (options.drop_shared_indexers && !options.force) {
      return InvalidArgument(config.source + ": model_type 'deepseek_v32': transformers' DeepseekV32 model runs every "
                             "layer's indexer, so --drop-shared-indexers would leave the Shared layers' indexers "
                             "randomly initialised there; pass --force to drop them anyway (SGLang and vLLM only)");
    }
    warnings.push_back(config.source + ": model_type 'deepseek_v32': transformers ignores the pattern keys for this "
                       "class and runs every layer's indexer; SGLang and vLLM apply the pattern (docs/serving.md)" +
                       std::string(options.drop_shared_indexers ? "; --force: the Shared layers' indexers are dropped "
                                                                  "and transformers will initialise them randomly"
                                                                : ""));
  }
  if (options.indexer_dtype == IndexerDType::kFp8 && !config.quant.fp8) {
    return InvalidArgument(config.source + ": --indexer-dtype fp8 needs an FP8 checkpoint (quantization_config with "
                           "weight_block_size); this one is not quantised");
  }
  if (!trained.empty()) {
    for (int l = 0; l < pattern.num_layers(); ++l) {
      if (pattern.is_full(l) && !trained.count(l)) {
        warnings.push_back("layer " + std::to_string(l) + " is Full in pattern " + pattern.ToString() +
                           " but the checkpoint did not train its indexer: it keeps the model's original indexer");
      }
      if (!pattern.is_full(l) && trained.count(l)) {
        warnings.push_back("layer " + std::to_string(l) + " is Shared in pattern " + pattern.ToString() +
                           " but the checkpoint trained its indexer: those weights are not exported");
      }
    }
  }
  return warnings;
}

Status ExportModel(const std::string& model_dir, const IndexerSet& trained, const IndexPattern& pattern,
                   const ExportOptions& options, const std::string& out_dir, ExportReport* report) {
  ExportReport local;
  if (!report) report = &local;
  ASSIGN_OR_RETURN(ModelConfig config, LoadModelConfig(model_dir));
  if (pattern.num_layers() != config.num_layers) return InvalidArgument("pattern length does not match the model");
  ASSIGN_OR_RETURN(report->warnings, CheckExport(config, trained, pattern, options));
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

  // 1. Shards. Each tensor the export changes (a trained Full layer's indexer tensor, its FP8
  // scale, and with drop_shared_indexers a Shared layer's indexer tensor) is taken out of its
  // source shard; trained tensors go to one new shard. A shard holding none of them is hard-linked
  // (or copied), one holding some is rewritten under its name without them (and left out when
  // nothing remains). A single-file model.safetensors is rewritten whole with the trained tensors
  // in place: transformers reads a model.safetensors before any index, so they must stay in it.
  const std::vector<std::string> shards = ckpt.shard_files();
  const bool single_file = shards.size() == 1 && shards[0] == "model.safetensors";
  std::string new_shard;
  for (int i = 1; new_shard.empty(); ++i) {
    char name[64];
    std::snprintf(name, sizeof(name), "model-indexcache-%05d.safetensors", i);
    if (std::find(shards.begin(), shards.end(), name) == shards.end()) new_shard = name;
  }
  std::map<std::string, std::string> weight_map;
  std::vector<std::string> kept_bf16;  // modules written bf16 inside an FP8 checkpoint
  uint64_t total_size = 0;
  NamedTensors trained_tensors;                                // for new_shard
  std::map<std::string, std::vector<std::string>> link_failed;  // reason -> shards copied instead
  std::map<std::string, std::vector<std::string>> names_of;  // shard -> tensors the index puts there
  for (const std::string& name : ckpt.names()) names_of[ckpt.ShardOf(name)].push_back(name);
  for (const std::string& shard : shards) {
    const std::string src = JoinPath(model_dir, shard);
    ASSIGN_OR_RETURN(auto file, SafetensorsFile::Open(src));
    // The tensors of this shard, as the index assigns them; a name the file holds but the index
    // puts elsewhere is no part of the checkpoint and is not carried.
    NamedTensors kept;     // unchanged, written back if the shard is rewritten
    bool touched = false;  // holds a changed or dropped tensor
    for (const std::string& name : file->names()) {
      const bool assigned = ckpt.ShardOf(name) == shard;
      bool shared_indexer = false;
      for (int l = 0; l < pattern.num_layers(); ++l) {
        if (!pattern.is_full(l) && StartsWith(name, IndexerTensorPrefix(l))) shared_indexer = true;
      }
      if (shared_indexer && options.drop_shared_indexers) {
        touched = true;
        continue;
      }
      int64_t numel = 0;
      if (EndsWith(name, "_scale_inv") && !shared_indexer &&
          TrainedData(trained, name.substr(0, name.size() - 10), &numel)) {
        touched = true;  // written again together with its re-quantised weight
        continue;
      }
      const float* values = shared_indexer ? nullptr : TrainedData(trained, name, &numel);
      if (!assigned) {
        if (values) touched = true;  // a stale copy of a trained tensor must not stay in a linked shard
        continue;
      }
      ASSIGN_OR_RETURN(Tensor t, file->Get(name));
      if (!values) {
        kept.push_back({name, t});
        weight_map[name] = shard;
        total_size += t.nbytes();
        continue;
      }
      touched = true;
      if (numel != t.numel()) return InvalidArgument(shard + ": tensor '" + name + "' has a different size than the trained one");
      Tensor encoded, scale;
      const DType dtype = TargetDType(name, t, options.indexer_dtype);
      RETURN_IF_ERROR(
          Encode(values, t, dtype, config.quant, &encoded, &scale).WithContext(shard + ": tensor '" + name + "'"));
      if (config.quant.fp8 && t.dtype() == DType::kF8E4M3 && dtype != DType::kF8E4M3) {
        kept_bf16.push_back(name.substr(0, name.size() - 7));
      }
      NamedTensors& dest = single_file ? kept : trained_tensors;
      const std::string& dest_shard = single_file ? shard : new_shard;
      dest.push_back({name, encoded});
      weight_map[name] = dest_shard;
      total_size += encoded.nbytes();
      if (!scale.empty()) {
        dest.push_back({name + "_scale_inv", scale});
        weight_map[name + "_scale_inv"] = dest_shard;
        total_size += scale.nbytes();
      }
    }
    for (const std::string& name : names_of[shard]) {
      // The index promises tensors only the file can deliver; a promise the file breaks would
      // otherwise vanish from the new index without a word.
      if (!file->Has(name)) {
        return DataLoss(JoinPath(model_dir, "model.safetensors.index.json") + ": tensor '" + name + "' is not in its shard '" +
                        shard + "'");
      }
    }
    const std::string dst = JoinPath(tmp, shard);
    if (touched) {
      if (kept.empty()) {
        report->removed_shards.push_back(shard);
        continue;
      }
      RETURN_IF_ERROR(WriteSafetensors(dst, kept, file->metadata()));
      report->rewritten_shards.push_back(shard);
    } else if (options.copy_shards) {
      RETURN_IF_ERROR(CopyFileStreaming(src, dst));
      report->copied_shards.push_back(shard);
    } else if (std::string reason; HardLink(src, dst, &reason).ok()) {
      report->linked_shards.push_back(shard);
    } else {
      // Across filesystems, or where links are refused: the bytes still have to be in --out.
      link_failed[reason].push_back(shard);
      RETURN_IF_ERROR(CopyFileStreaming(src, dst));
      report->copied_shards.push_back(shard);
    }
  }
  for (const auto& [reason, copied] : link_failed) {
    report->warnings.push_back("hard-linking " + std::to_string(copied.size()) + " unchanged shard(s) from " + model_dir +
                               " into " + out_dir + " failed (" + reason + "), so they were copied (first: " +
                               copied.front() + ")");
  }
  if (!trained_tensors.empty()) {
    RETURN_IF_ERROR(WriteSafetensors(JoinPath(tmp, new_shard), trained_tensors, {{"format", "pt"}}));
    report->new_shard = new_shard;
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
  // Some engines (vLLM's IndexCache path and forks of it) only read the pattern keys when this
  // switch is on; all-F turns it off so no engine skips an indexer.
  cfg["use_index_cache"] = pattern.num_full() < pattern.num_layers();
  int freq = 0, offset = 0;
  if (pattern.AsFrequency(&freq, &offset)) {
    cfg["index_topk_freq"] = freq;
    cfg["index_skip_topk_offset"] = offset;
  } else {
    cfg.erase("index_topk_freq");
    cfg.erase("index_skip_topk_offset");
  }
  if (!kept_bf16.empty() && cfg.contains("quantization_config") && cfg["quantization_config"].is_object()) {
    // transformers' fine-grained FP8 loader keeps the modules listed here in high precision.
    json& q = cfg["quantization_config"];
    json list = q.contains("modules_to_not_convert") && q["modules_to_not_convert"].is_array() ? q["modules_to_not_convert"]
                                                                                              : json::array();
    for (const std::string& m : kept_bf16) {
      if (std::find(list.begin(), list.end(), m) == list.end()) list.push_back(m);
    }
    q["modules_to_not_convert"] = list;
  }
  RETURN_IF_ERROR(WriteFileAtomic(JoinPath(tmp, "config.json"), cfg.dump(2, ' ', false, json::error_handler_t::replace)));

  // 3. The side files (tokenizer, generation config, ...) as they are; nothing else.
  if (DIR* d = ::opendir(model_dir.c_str())) {
    std::vector<std::string> names;
    while (dirent* e = ::readdir(d)) names.push_back(e->d_name);
    ::closedir(d);
    std::sort(names.begin(), names.end());
    for (const std::string& n : names) {
      if (n == "." || n == ".." || n == "config.json" || n == "model.safetensors.index.json" || EndsWith(n, ".safetensors")) continue;
      if (!FileExists(JoinPath(model_dir, n))) continue;
      if (!IsSideFile(n)) {
        report->skipped.push_back(n);
        continue;
      }
      {
        RETURN_IF_ERROR(CopyFile(JoinPath(model_dir, n), JoinPath(tmp, n)));
        report->copied.push_back(n);
      }
    }
  }
  RETURN_IF_ERROR(FsyncDirectory(tmp));
  if (::rename(tmp.c_str(), out_dir.c_str()) != 0) return IoError(out_dir + ": rename failed");
  cleanup.committed = true;
  return FsyncDirectory(DirName(out_dir));
}

}  // namespace indexcache
