// Export: a Hugging Face model directory whose Full layers carry trained indexer weights and whose
// config.json carries the IndexCache pattern keys serving engines read.
//
// The weights are not rewritten (a DeepSeek-V3.2 checkpoint is 690 GB). The tensors the export
// changes are the trained Full layers' indexer tensors (in the checkpoint's dtype or the one
// asked for; FP8 e4m3 ones re-quantised with fresh block scales, whose old `_scale_inv` goes too)
// and, with drop_shared_indexers, the Shared layers' indexer tensors, which are removed (GLM-5.2
// style). Then, per source shard:
//   - no changed tensor in it: hard-linked into the output under its name (a symbolic link, as in
//     a Hugging Face cache snapshot, is followed). Where hard-linking fails (another filesystem,
//     links refused) it is copied, and a warning says so; with copy_shards it is always copied.
//     A hard link shares the source's bytes: editing that file in place edits the source too.
//   - some changed tensors in it: rewritten under its name without them, the rest bit-exact;
//     a shard left with nothing is left out.
// The trained tensors go to one new shard, `model-indexcache-00001.safetensors` (the first such
// name the source does not use, so an export can be exported again). A source that is a single
// `model.safetensors` (small models) is rewritten whole with the trained tensors in place instead:
// transformers reads a model.safetensors before any index, so the trained tensors must be in it.
// model.safetensors.index.json is regenerated: every tensor exactly once, pointing at the shard
// that holds it (trained ones at the new shard), dropped ones gone, and a tensor the source index
// lists but its shard lacks is an error. The source shards are never modified.
//
// The HF side files of the source directory (tokenizer, generation config, chat template, custom
// code, README, licence: *.json, *.txt, *.model, *.tiktoken, *.py, *.jinja, *.md, LICENSE*) are
// copied; anything else (e.g. a fixture's logits .npy, stale .bin/.pt weights) is not, and the
// report says which files went which way. config.json gains `index_topk_pattern` ("FSSF..."),
// `indexer_types` (["full", "shared", ...]), `use_index_cache` (true when a layer is Shared) and,
// when the pattern is the regular freq/offset rule, `index_topk_freq` + `index_skip_topk_offset`.
// The output appears atomically: it is written to `<out>.tmp.<pid>` (beside `out`, so hard links
// work wherever `out` can hold them) and renamed; a failed export leaves nothing behind.
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
  // Copy the unchanged shards instead of hard-linking them (an output independent of the source).
  bool copy_shards = false;
};

// What an export did and what the user should know, printed by `indexcache export`.
struct ExportReport {
  std::vector<std::string> warnings;
  std::vector<std::string> copied;   // side files carried over
  std::vector<std::string> skipped;  // files left out
  // The source's shards, each in exactly one list (sorted by name within it).
  std::vector<std::string> linked_shards;     // unchanged, hard-linked
  std::vector<std::string> copied_shards;     // unchanged, copied (copy_shards, or linking failed: see warnings)
  std::vector<std::string> rewritten_shards;  // rewritten without their changed tensors (single file: with them)
  std::vector<std::string> removed_shards;    // held changed tensors only: not in the output
  std::string new_shard;                      // the trained tensors' shard; empty when there are none
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
