// Export: a Hugging Face model directory whose Full layers carry trained indexer weights and whose
// config.json carries the IndexCache pattern keys serving engines read.
//
// Every file of the source directory is carried over; each safetensors shard is rewritten under
// its own name with the trained tensors replacing the originals in the original dtype (FP8 e4m3
// weights are re-quantised with fresh block scales), and model.safetensors.index.json is
// regenerated. config.json gains `index_topk_pattern` ("FSSF..."), `indexer_types`
// (["full", "shared", ...]) and, when the pattern is the regular freq/offset rule,
// `index_topk_freq` + `index_skip_topk_offset`. With drop_shared_indexers the Shared layers'
// indexer tensors are left out (GLM-5.2 style). The output appears atomically: it is written to
// `<out>.tmp.<pid>` and renamed.
#pragma once

#include <string>

#include "core/status.h"
#include "model/pattern.h"
#include "trainer/distill.h"

namespace indexcache {

struct ExportOptions {
  bool drop_shared_indexers = false;
};

Status ExportModel(const std::string& model_dir, const IndexerSet& trained, const IndexPattern& pattern,
                   const ExportOptions& options, const std::string& out_dir);

// The indexer tensor names of a layer, as released checkpoints spell them.
std::string IndexerTensorPrefix(int layer);

}  // namespace indexcache
