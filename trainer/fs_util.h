// Directory helpers the trainer needs beyond core/file_util.h: mkdir -p, listing, recursive
// removal (for pruning checkpoints and cleaning up after a crash), and hard links and streaming
// copies of large files (for export).
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

// Creates `to` as a hard link to `from`. A symbolic link `from` (a Hugging Face cache snapshot's
// shards are links into its blob store) is followed: `to` is a link to the target's inode, never a
// link to the symbolic link. Fails (the message carries the system's reason) across filesystems,
// on filesystems without hard links, or where the kernel refuses (fs.protected_hardlinks); the
// caller decides whether to copy instead. *reason (if given) gets the system's reason alone.
Status HardLink(const std::string& from, const std::string& to, std::string* reason = nullptr);

// Copies the bytes of the file `from` (symbolic links followed) into a new file `to`, which must
// not exist, in bounded memory (copy_file_range, which may share extents on filesystems that can;
// else 8 MiB reads and writes), then fsyncs it. A failed copy removes the partial `to`.
Status CopyFileStreaming(const std::string& from, const std::string& to);

// This machine's host name ("localhost" if it cannot be read).
std::string HostName();

}  // namespace indexcache
