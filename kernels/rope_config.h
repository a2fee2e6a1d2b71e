// RopeConfig: the rotary embedding parameters the rope tables are built from (default or yarn),
// as model/config.h resolves them from config.json. It lives here, below model/, so that kernels/
// never includes model/.
#pragma once

#include <cstdint>

namespace indexcache {

enum class RopeType { kDefault, kYarn };

struct RopeConfig {
  RopeType type = RopeType::kDefault;
  double theta = 10000.0;
  // yarn only
  double factor = 1.0;
  double beta_fast = 32.0, beta_slow = 1.0;
  double mscale = 0.0, mscale_all_dim = 0.0;  // 0 = absent
  int64_t original_max_position_embeddings = 0;
  bool truncate = true;
  // Multiplies cos and sin (yarn's attention factor; 1 for default rope).
  double attention_factor = 1.0;
};

}  // namespace indexcache
