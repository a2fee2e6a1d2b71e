// Training checkpoints: one directory per saved step, written atomically.
//
//   <dir>/step_00000500/   weights.safetensors, optimizer.safetensors, trainer_state.json,
//                          train_config.textproto (whatever files the caller gives)
//
// A checkpoint is assembled in `<dir>/.tmp_step_<step>_<pid>/`, every file and that directory are
// fsynced, and only then is it renamed to `step_<8-digit step>` (and `<dir>` fsynced). Deleting
// one renames it out of the `step_*` namespace first. So whatever point a crash hits, every
// `step_*` directory is complete and earlier checkpoints are untouched; the leftovers are `.tmp_*`
// directories, which listing ignores and RemoveStaleTempDirs() deletes.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "core/safetensors.h"
#include "core/status.h"

namespace indexcache {

// Conventional file names; the trainer writes these, the format does not require them.
inline constexpr char kCheckpointWeightsFile[] = "weights.safetensors";
inline constexpr char kCheckpointOptimizerFile[] = "optimizer.safetensors";
inline constexpr char kCheckpointStateFile[] = "trainer_state.json";
inline constexpr char kCheckpointConfigFile[] = "train_config.textproto";

// "step_00000500" (more digits past 99999999).
std::string CheckpointDirName(int64_t step);

// What a checkpoint holds, by file name (plain names: no '/', not starting with '.').
struct CheckpointContents {
  std::map<std::string, NamedTensors> tensors;  // written as safetensors
  std::map<std::string, nlohmann::json> json;   // written pretty-printed
  std::map<std::string, std::string> text;      // written as is
  // Metadata for every safetensors file, e.g. {"step": "500"}.
  std::map<std::string, std::string> tensor_metadata;
};

// Builds one checkpoint in its temp directory; nothing is visible under `step_*` before Commit().
class CheckpointWriter {
 public:
  // Creates `dir` if missing and `<dir>/.tmp_step_<step>_<pid>/` (replacing a leftover of that
  // exact name).
  static StatusOr<std::unique_ptr<CheckpointWriter>> Begin(const std::string& dir, int64_t step);
  ~CheckpointWriter();  // without Commit(): removes the temp directory
  CheckpointWriter(const CheckpointWriter&) = delete;
  CheckpointWriter& operator=(const CheckpointWriter&) = delete;

  Status AddTensors(const std::string& file, const NamedTensors& tensors,
                    const std::map<std::string, std::string>& metadata = {});
  Status AddJson(const std::string& file, const nlohmann::json& value);
  Status AddText(const std::string& file, const std::string& contents);

  // fsyncs the temp directory, renames it to `<dir>/step_XXXXXXXX` and fsyncs `<dir>`; returns
  // the final path. A checkpoint of the same step already there is swapped out atomically
  // (renameat2 RENAME_EXCHANGE; where the file system lacks it, moved aside first) and removed.
  StatusOr<std::string> Commit();

  const std::string& temp_dir() const { return temp_dir_; }

 private:
  CheckpointWriter() = default;
  Status CheckNewFile(const std::string& file);
  std::string dir_, temp_dir_;
  int64_t step_ = 0;
  std::vector<std::string> files_;
  bool committed_ = false;
};

// Begin + Add* for every entry + Commit.
StatusOr<std::string> WriteCheckpoint(const std::string& dir, int64_t step,
                                      const CheckpointContents& contents);

struct CheckpointInfo {
  int64_t step = 0;
  std::string path;  // <dir>/step_XXXXXXXX
};

// Committed checkpoints in `dir`, sorted by step; `.tmp_*` and other names are ignored. A missing
// `dir` has none.
StatusOr<std::vector<CheckpointInfo>> ListCheckpoints(const std::string& dir);
// The highest step, or nullopt when there is none.
StatusOr<std::optional<CheckpointInfo>> LatestCheckpoint(const std::string& dir);
// Deletes all but the newest `keep_last` (>= 1) checkpoints, oldest first; returns the removed
// steps. Each is renamed to a `.tmp_*` name before its files go.
StatusOr<std::vector<int64_t>> PruneCheckpoints(const std::string& dir, int keep_last);
// Deletes `.tmp_*` directories left in `dir` by other processes (crashed saves or deletions).
// Call it only where this process is the sole writer of `dir` (rank 0 at start-up); returns the
// names removed.
StatusOr<std::vector<std::string>> RemoveStaleTempDirs(const std::string& dir);

// Readers; `checkpoint` is a CheckpointInfo::path. Errors name the file.
// Tensors sorted by name; they are views of the memory-mapped file and keep it mapped.
StatusOr<NamedTensors> ReadCheckpointTensors(const std::string& checkpoint, const std::string& file);
StatusOr<nlohmann::json> ReadCheckpointJson(const std::string& checkpoint, const std::string& file);
StatusOr<std::string> ReadCheckpointText(const std::string& checkpoint, const std::string& file);

}  // namespace indexcache
