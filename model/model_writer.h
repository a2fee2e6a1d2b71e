// Writes a model directory that DsaModel::Load reads: config.json plus one f32
// model.safetensors with the released checkpoints' tensor names (experts stored per expert).
// For test fixtures built in memory (model/random_weights.h), e.g. deeper models than the
// transformers fixtures in tests/data.
#pragma once

#include <string>

#include <nlohmann/json.hpp>

#include "core/status.h"
#include "model/weights.h"

namespace indexcache {

// `config_json` is written as is; `weights` must hold every layer (it is the caller's job that
// the two describe the same model: Load checks every shape).
Status WriteModelDirectory(const std::string& dir, const nlohmann::json& config_json, const ModelWeights& weights);

}  // namespace indexcache
