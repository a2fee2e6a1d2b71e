#include "trainer/checkpoint.h"

#include <fcntl.h>
#include <stdio.h>  // renameat2
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cinttypes>
#include <cstring>

#include "core/file_util.h"
#include "trainer/fs_util.h"

namespace indexcache {

namespace {

std::string Errno() { return std::strerror(errno); }

constexpr char kStepPrefix[] = "step_";
constexpr char kTempPrefix[] = ".tmp_";

std::string Pid() { return std::to_string(static_cast<long long>(::getpid())); }

// The step a directory name stands for, or -1. Only the canonical spelling counts, so that
// "step_000000005" cannot shadow "step_00000005".
int64_t ParseStepDirName(const std::string& name) {
  const size_t prefix = sizeof(kStepPrefix) - 1;
  if (name.compare(0, prefix, kStepPrefix) != 0) return -1;
  const std::string digits = name.substr(prefix);
  if (digits.empty() || digits.size() > 18) return -1;
  if (!std::all_of(digits.begin(), digits.end(), [](char c) { return c >= '0' && c <= '9'; })) return -1;
  const int64_t step = std::stoll(digits);
  return CheckpointDirName(step) == name ? step : -1;
}

// Where a committed checkpoint goes to be deleted: out of the step_* namespace.
std::string AsideName(const std::string& dir, int64_t step) {
  return JoinPath(dir, std::string(kTempPrefix) + "delete_" + CheckpointDirName(step) + "_" + Pid());
}

Status CheckFileName(const std::string& where, const std::string& file) {
  if (file.empty() || file[0] == '.' || file.find('/') != std::string::npos) {
    return InvalidArgument(where + ": checkpoint file name '" + file +
                           "' must be a plain name (no '/', not starting with '.')");
  }
  return Status::Ok();
}

}  // namespace

std::string CheckpointDirName(int64_t step) {
  char buf[40];
  std::snprintf(buf, sizeof(buf), "%s%08" PRId64, kStepPrefix, step);
  return buf;
}

// ---- CheckpointWriter ----

StatusOr<std::unique_ptr<CheckpointWriter>> CheckpointWriter::Begin(const std::string& dir, int64_t step) {
  if (dir.empty()) return InvalidArgument("checkpoint: directory is empty");
  if (step < 0) {
    return InvalidArgument(dir + ": checkpoint step must be >= 0 (got " + std::to_string(step) + ")");
  }
  const bool existed = IsDirectory(dir);
  RETURN_IF_ERROR(MakeDirectories(dir));
  // A new checkpoint directory must itself survive a crash before anything inside it matters.
  if (!existed) RETURN_IF_ERROR(FsyncDirectory(DirName(dir)));

  std::unique_ptr<CheckpointWriter> w(new CheckpointWriter());
  w->dir_ = dir;
  w->step_ = step;
  w->temp_dir_ = JoinPath(dir, std::string(kTempPrefix) + CheckpointDirName(step) + "_" + Pid());
  // Same name means same pid: a previous process that crashed and whose pid was reused.
  RETURN_IF_ERROR(RemoveTree(w->temp_dir_));
  if (::mkdir(w->temp_dir_.c_str(), 0755) != 0) {
    return IoError(w->temp_dir_ + ": cannot create directory: " + Errno());
  }
  return w;
}

CheckpointWriter::~CheckpointWriter() {
  if (!committed_ && !temp_dir_.empty()) (void)RemoveTree(temp_dir_);
}

Status CheckpointWriter::CheckNewFile(const std::string& file) {
  if (committed_) return Internal(temp_dir_ + ": checkpoint already committed; cannot add '" + file + "'");
  RETURN_IF_ERROR(CheckFileName(dir_, file));
  if (std::find(files_.begin(), files_.end(), file) != files_.end()) {
    return InvalidArgument(dir_ + ": checkpoint file '" + file + "' given twice");
  }
  files_.push_back(file);
  return Status::Ok();
}

Status CheckpointWriter::AddTensors(const std::string& file, const NamedTensors& tensors,
                                    const std::map<std::string, std::string>& metadata) {
  RETURN_IF_ERROR(CheckNewFile(file));
  // WriteSafetensors fsyncs the file (and the temp directory) before returning.
  return WriteSafetensors(JoinPath(temp_dir_, file), tensors, metadata);
}

Status CheckpointWriter::AddJson(const std::string& file, const nlohmann::json& value) {
  RETURN_IF_ERROR(CheckNewFile(file));
  std::string text;
  try {
    text = value.dump(2) + "\n";
  } catch (const nlohmann::json::exception& e) {  // strings that are not valid UTF-8
    return InvalidArgument(JoinPath(temp_dir_, file) + ": cannot encode JSON: " + e.what());
  }
  return WriteFileAtomic(JoinPath(temp_dir_, file), text);
}

Status CheckpointWriter::AddText(const std::string& file, const std::string& contents) {
  RETURN_IF_ERROR(CheckNewFile(file));
  return WriteFileAtomic(JoinPath(temp_dir_, file), contents);
}

StatusOr<std::string> CheckpointWriter::Commit() {
  if (committed_) return Internal(temp_dir_ + ": checkpoint committed twice");
  RETURN_IF_ERROR(FsyncDirectory(temp_dir_));
  const std::string final_dir = JoinPath(dir_, CheckpointDirName(step_));
  if (::rename(temp_dir_.c_str(), final_dir.c_str()) != 0) {
    if (errno != ENOTEMPTY && errno != EEXIST) return IoError(final_dir + ": rename failed: " + Errno());
    // The step was saved before (a re-run into the same directory). Swap in one atomic step so
    // that `step_N` is always one complete checkpoint, then delete the old one from the temp name.
    if (::renameat2(AT_FDCWD, temp_dir_.c_str(), AT_FDCWD, final_dir.c_str(), RENAME_EXCHANGE) == 0) {
      RETURN_IF_ERROR(FsyncDirectory(dir_));
      committed_ = true;
      RETURN_IF_ERROR(RemoveTree(temp_dir_));
    } else if (errno == EINVAL || errno == ENOSYS || errno == ENOTSUP) {
      // No atomic exchange on this file system (NFS, Lustre): move the old one aside first. A
      // crash in between leaves no step_N at all, but never a mixed one.
      const std::string old_dir = AsideName(dir_, step_);
      RETURN_IF_ERROR(RemoveTree(old_dir));
      if (::rename(final_dir.c_str(), old_dir.c_str()) != 0) {
        return IoError(final_dir + ": cannot move the old checkpoint aside: " + Errno());
      }
      RETURN_IF_ERROR(FsyncDirectory(dir_));
      if (::rename(temp_dir_.c_str(), final_dir.c_str()) != 0) {
        return IoError(final_dir + ": rename failed: " + Errno());
      }
      committed_ = true;
      RETURN_IF_ERROR(FsyncDirectory(dir_));
      RETURN_IF_ERROR(RemoveTree(old_dir));
    } else {
      return IoError(final_dir + ": already exists and cannot be replaced: " + Errno());
    }
  }
  committed_ = true;
  RETURN_IF_ERROR(FsyncDirectory(dir_));
  return final_dir;
}

StatusOr<std::string> WriteCheckpoint(const std::string& dir, int64_t step,
                                      const CheckpointContents& contents) {
  ASSIGN_OR_RETURN(auto writer, CheckpointWriter::Begin(dir, step));
  for (const auto& [file, tensors] : contents.tensors) {
    RETURN_IF_ERROR(writer->AddTensors(file, tensors, contents.tensor_metadata));
  }
  for (const auto& [file, value] : contents.json) RETURN_IF_ERROR(writer->AddJson(file, value));
  for (const auto& [file, text] : contents.text) RETURN_IF_ERROR(writer->AddText(file, text));
  return writer->Commit();
}

// ---- Listing and pruning ----

StatusOr<std::vector<CheckpointInfo>> ListCheckpoints(const std::string& dir) {
  std::vector<CheckpointInfo> out;
  if (!IsDirectory(dir)) {
    struct stat st;
    if (::stat(dir.c_str(), &st) == 0) {
      return InvalidArgument(dir + ": checkpoint directory is not a directory");
    }
    return out;
  }
  ASSIGN_OR_RETURN(const std::vector<std::string> names, ListDirectory(dir));
  for (const std::string& name : names) {
    const int64_t step = ParseStepDirName(name);
    const std::string path = JoinPath(dir, name);
    if (step >= 0 && IsDirectory(path)) out.push_back({step, path});
  }
  std::sort(out.begin(), out.end(),
            [](const CheckpointInfo& a, const CheckpointInfo& b) { return a.step < b.step; });
  return out;
}

StatusOr<std::optional<CheckpointInfo>> LatestCheckpoint(const std::string& dir) {
  ASSIGN_OR_RETURN(const std::vector<CheckpointInfo> all, ListCheckpoints(dir));
  if (all.empty()) return std::optional<CheckpointInfo>();
  return std::optional<CheckpointInfo>(all.back());
}

StatusOr<std::vector<int64_t>> PruneCheckpoints(const std::string& dir, int keep_last) {
  if (keep_last < 1) {
    return InvalidArgument(dir + ": keep_last must be >= 1 (got " + std::to_string(keep_last) + ")");
  }
  ASSIGN_OR_RETURN(const std::vector<CheckpointInfo> all, ListCheckpoints(dir));
  std::vector<int64_t> removed;
  const size_t remove = all.size() > static_cast<size_t>(keep_last) ? all.size() - keep_last : 0;
  for (size_t i = 0; i < remove; ++i) {
    // Out of the step_* namespace first: a crash during the deletion leaves a .tmp_* directory,
    // never a step_* one with files missing.
    const std::string doomed = AsideName(dir, all[i].step);
    RETURN_IF_ERROR(RemoveTree(doomed));
    if (::rename(all[i].path.c_str(), doomed.c_str()) != 0) {
      return IoError(all[i].path + ": cannot move aside for deletion: " + Errno());
    }
    RETURN_IF_ERROR(FsyncDirectory(dir));
    RETURN_IF_ERROR(RemoveTree(doomed));
    removed.push_back(all[i].step);
  }
  return removed;
}

StatusOr<std::vector<std::string>> RemoveStaleTempDirs(const std::string& dir) {
  std::vector<std::string> removed;
  if (!IsDirectory(dir)) return removed;
  ASSIGN_OR_RETURN(const std::vector<std::string> names, ListDirectory(dir));
  const std::string own_suffix = "_" + Pid();
  for (const std::string& name : names) {
    if (name.compare(0, sizeof(kTempPrefix) - 1, kTempPrefix) != 0) continue;
    // Our own temp directories belong to a save or prune in progress in this process.
    if (name.size() > own_suffix.size() &&
        name.compare(name.size() - own_suffix.size(), own_suffix.size(), own_suffix) == 0) {
      continue;
    }
    RETURN_IF_ERROR(RemoveTree(JoinPath(dir, name)));
    removed.push_back(name);
  }
  return removed;
}

// ---- Readers ----

StatusOr<NamedTensors> ReadCheckpointTensors(const std::string& checkpoint, const std::string& file) {
  RETURN_IF_ERROR(CheckFileName(checkpoint, file));
  ASSIGN_OR_RETURN(auto st, SafetensorsFile::Open(JoinPath(checkpoint, file)));
  NamedTensors out;
  for (const std::string& name : st->names()) {
    ASSIGN_OR_RETURN(Tensor t, st->Get(name));
    out.emplace_back(name, std::move(t));
  }
  return out;
}

StatusOr<nlohmann::json> ReadCheckpointJson(const std::string& checkpoint, const std::string& file) {
  RETURN_IF_ERROR(CheckFileName(checkpoint, file));
  const std::string path = JoinPath(checkpoint, file);
  ASSIGN_OR_RETURN(const std::string text, ReadFileToString(path));
  try {
    return nlohmann::json::parse(text);
  } catch (const nlohmann::json::exception& e) {
    return DataLoss(path + ": invalid JSON: " + e.what());
  }
}

StatusOr<std::string> ReadCheckpointText(const std::string& checkpoint, const std::string& file) {
  RETURN_IF_ERROR(CheckFileName(checkpoint, file));
  return ReadFileToString(JoinPath(checkpoint, file));
}

}  // namespace indexcache
