// Directory helpers the trainer needs beyond core/file_util.h: mkdir -p, listing, and recursive
// removal (for pruning checkpoints and cleaning up after a crash).
#pragma once

#include <string>
#include <vector>

#include "core/status.h"

namespace indexcache {

// Creates `path` and any missing parents (mode 0755); an existing directory is fine.
Status MakeDirectories(const std::string& path);

// Entry names in `path` (no "." or ".."), sorted.
StatusOr<std::vector<std::string>> ListDirectory(const std::string& path);

// Removes `path` and everything below it; symbolic links are removed, never followed. A missing
// path is fine.
Status RemoveTree(const std::string& path);

// This machine's host name ("localhost" if it cannot be read).
std::string HostName();

}  // namespace indexcache
