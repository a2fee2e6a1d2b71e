// The pictures written next to `indexcache eval --out FILE.json`, drawn from that JSON alone
// (viz/svg_plot.h), so they can be redrawn from a saved result:
//   FILE_overlap.svg          top-k overlap of every pair of layers under all-F (with --overlap)
//   FILE_loss_by_position.svg loss by position bucket, one line per pattern (with --bucket)
//   FILE_tasks_pI.svg         exact-match accuracy over context length x needle depth for the
//                             I-th pattern, pooled over task kinds (with --tasks)
#pragma once

#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "core/status.h"

namespace indexcache {

// Writes the pictures the report has data for; returns their paths.
StatusOr<std::vector<std::string>> WriteEvalPictures(const nlohmann::json& report, const std::string& json_path);

}  // namespace indexcache
