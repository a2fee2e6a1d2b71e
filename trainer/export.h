// Export: a Hugging Face model directory whose Full layers carry trained indexer weights and whose
// config.json carries the IndexCache pattern keys serving engines read.
//
// The HF side files of the source directory (tokenizer, generation config, chat template, custom
// code, README, licence: *.json, *.txt, *.model, *.tiktoken, *.py, *.jinja, *.md, LICENSE*) are
// carried over; anything else (e.g. a fixture's logits .npy, stale .bin/.pt weights) is not, and
// the report says which files went which way. Each safetensors shard is rewritten under
// its own name with the trained tensors replacing the originals in the original dtype (FP8 e4m3
// weights are re-quantised with fresh block scales), and model.safetensors.index.json is
// regenerated. config.json gains `index_topk_pattern` ("FSSF..."), `indexer_types`
// (["full", "shared", ...]), `use_index_cache` (true when a layer is Shared) and, when the pattern is the regular freq/offset rule,
// `index_topk_freq` + `index_skip_topk_offset`. With drop_shared_indexers the Shared layers'
// indexer tensors are left out (GLM-5.2 style). The output appears atomically: it is written to
// `<out>.tmp.<pid>` and renamed.
#pragma once

#include <string>
#include <vector>

#include "core/status.h"
#include "model/config.h"
#include "model/pattern.h"
#include "trainer/distill.h"

namespace indexcache {

// The dtype trained indexer matrices (wq_b, wk, weights_proj) are written in.
enum class IndexerDType {
  kCheckpoint,  // the tensor's own dtype in the source (FP8 re-quantised with fresh block scales)
  kBf16,        // bf16, also inside an FP8 checkpoint (re-quantising costs ~2.5 % relative error);
                // the modules are listed in quantization_config.modules_to_not_convert
  kFp8,         // FP8 e4m3 with block scales; the checkpoint must be FP8-quantised
};

// "checkpoint", "bf16" or "fp8".
StatusOr<IndexerDType> ParseIndexerDType(const std::string& name);

struct ExportOptions {
  bool drop_shared_indexers = false;
  // transformers' deepseek_v32 class runs every layer's indexer: dropping the Shared layers'
  // indexers there leaves them randomly initialised, so it is refused unless forced.
  bool force = false;
  IndexerDType indexer_dtype = IndexerDType::kCheckpoint;
};

// What an export did and what the user should know, printed by `indexcache export`.
struct ExportReport {
  std::vector<std::string> warnings;
  std::vector<std::string> copied;   // side files carried over
  std::vector<std::string> skipped;  // files left out
};

// The warnings (and the refusal, as an error) for exporting `pattern` of a model with `config`
// and the checkpoint's `trained` indexers (empty: no checkpoint). Called by ExportModel.
StatusOr<std::vector<std::string>> CheckExport(const ModelConfig& config, const IndexerSet& trained,
                                               const IndexPattern& pattern, const ExportOptions& options);

Status ExportModel(const std::string& model_dir, const IndexerSet& trained, const IndexPattern& pattern,
                   const ExportOptions& options, const std::string& out_dir, ExportReport* report = nullptr);

// The indexer tensor names of a layer, as released checkpoints spell them.
std::string IndexerTensorPrefix(int layer);

}  // namespace indexcache
