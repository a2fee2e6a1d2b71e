// Writes a model directory that DsaModel::Load reads: config.json plus one f32
// model.safetensors with the released checkpoints' tensor names (experts stored per expert).
// For test fixtures built in memory (model/random_weights.h), e.g. deeper models than the
// transformers fixtures in tests/data. Optionally stored the way DeepSeek's FP8 release stores
// them (Fp8Storage): synthetic FP8 checkpoints of any size for the FP8-resident CUDA path.
#pragma once

#include <string>

#include <nlohmann/json.hpp>

#include "core/status.h"
#include "model/weights.h"

namespace indexcache {

// Which matrices are written as FP8 e4m3 plus `<name>_scale_inv` (fp32, one scale per block of
// block_rows x block_cols: amax / 448, so each block uses the whole e4m3 range): every
// WeightMatrix except the LM head (MLA projections, o_proj, MLPs, experts) and the indexer's wq_b
// and wk, as in DeepSeek-V3.2's release. `config_json` must then carry a quantization_config with
// the same weight_block_size.
struct Fp8Storage {
  bool enabled = false;
  int64_t block_rows = 128, block_cols = 128;
  bool lm_head = false;  // also the LM head (the release keeps it bf16): covers an FP8 head
};

// `config_json` is written as is; `weights` must hold every layer in fp32 (it is the caller's job
// that the two describe the same model: Load checks every shape).
Status WriteModelDirectory(const std::string& dir, const nlohmann::json& config_json, const ModelWeights& weights,
                           const Fp8Storage& fp8 = {});

}  // namespace indexcache
