// indexcache bench --distill: distillation training steps per GPU on a V3.2-shaped stack.
#pragma once

#include <nlohmann/json.hpp>

#include "core/status.h"
#include "tools/flags.h"

namespace indexcache {

// Appends {"distill": [...]} rows to `out`. See the flags in tools/commands.cc.
Status BenchDistill(const Flags& flags, nlohmann::json* out);

}  // namespace indexcache
