// The search's picture: calibration loss against the number of Shared layers, the greedy
// trajectory against uniform interleaving (1/2, 1/4, 1/8 and the target's count), and the refined
// pattern when there is one. Written as SVG next to search.json.
#pragma once

#include <string>

#include "search/search_record.h"

namespace indexcache {

std::string RenderSearchPicture(const SearchRecord& record, const std::string& title);

}  // namespace indexcache
