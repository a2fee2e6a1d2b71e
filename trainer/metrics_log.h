// Training metrics: a JSON-lines file, a TensorBoard event file, and rank 0's progress line.
//
// Both files are written a whole record at a time and flushed at once, so a crash loses at most
// the record being written and `tail -f` / TensorBoard see each step as it finishes.
//
// The TensorBoard writer needs no TensorFlow: records use TFRecord framing
//   u64 length (LE) | u32 masked CRC32C of the 8 length bytes | data | u32 masked CRC32C of data
// and each record is an `Event` protobuf (tensorflow/core/util/event.proto) that we encode by hand;
// only the fields TensorBoard's scalar dashboard reads are written.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "core/status.h"

namespace indexcache {

// ---- CRC32C (Castagnoli, reflected polynomial 0x82F63B78), as TFRecord uses it ----

// CRC32C of `data`, continuing from a previous result `crc` (0 to start).
uint32_t Crc32c(const void* data, size_t size, uint32_t crc = 0);
// TFRecord stores CRCs masked, because CRCs of data that itself contains CRCs are weak.
uint32_t MaskCrc32c(uint32_t crc);
uint32_t UnmaskCrc32c(uint32_t masked);

// ---- Records ----

// One TFRecord: header, data and footer as laid out above.
std::string FrameTfRecord(const std::string& data);

// Event{wall_time, file_version: "brain.Event:2"}: the first record of every event file.
std::string EncodeFileVersionEvent(double wall_time);
// Event{wall_time, step, summary: Summary{value: [Value{tag, simple_value}]}}.
std::string EncodeScalarEvent(double wall_time, int64_t step, const std::string& tag, float value);

// ---- What one logged step holds ----

using Scalars = std::vector<std::pair<std::string, double>>;

struct StepMetrics {
  int64_t step = 0;
  double loss = 0;
  double lr = 0;
  double grad_norm = 0;
  double tokens_per_s = 0;
  Scalars extra;  // anything else, e.g. {"kl/layer_4", 0.31}, {"eval_loss", 1.9}

  // {"loss", loss}, {"lr", lr}, {"grad_norm", ...}, {"tokens_per_s", ...}, then `extra`.
  Scalars AllScalars() const;
};

// ---- JSON lines ----

// Drops every line of the JSON-lines file `path` whose "step" is above `step` (and any line that
// is not a JSON object with an integer "step", such as one cut short by a crash), rewriting the
// file atomically. A resumed run calls it with the step of its checkpoint, so steps the
// interrupted run logged after that checkpoint do not appear twice. A missing file is fine.
Status TruncateJsonlAfterStep(const std::string& path, int64_t step);

class JsonlWriter {
 public:
  // Opens `path` for appending (a resumed run continues the same file; readers take the last
  // line of a step) or truncates it. Creates missing parent directories.
  static StatusOr<std::unique_ptr<JsonlWriter>> Open(const std::string& path, bool append = true);
  ~JsonlWriter();
  JsonlWriter(const JsonlWriter&) = delete;
  JsonlWriter& operator=(const JsonlWriter&) = delete;

  // {"step": 12, "loss": 1.23, "lr": 0.0003, "grad_norm": 0.8, "tokens_per_s": 12300, ...extra}
  // on one line. NaN and Inf, which JSON cannot hold, are written as null.
  Status Write(const StepMetrics& metrics);
  // {"step": step, <name>: <value>, ...}: e.g. evaluation results between training steps.
  Status WriteScalars(int64_t step, const Scalars& scalars);

  const std::string& path() const { return path_; }

 private:
  JsonlWriter() = default;
  Status WriteLine(const std::string& line);
  std::string path_;
  int fd_ = -1;
};

// ---- TensorBoard ----

class TensorBoardWriter {
 public:
  // Creates `<dir>/events.out.tfevents.<unix_time>.<hostname>` (and `dir` if missing) and writes
  // the file_version record. Never overwrites: a name already taken gets a ".N" suffix, which
  // TensorBoard accepts (it matches "tfevents" in the name).
  static StatusOr<std::unique_ptr<TensorBoardWriter>> Create(const std::string& dir);
  ~TensorBoardWriter();
  TensorBoardWriter(const TensorBoardWriter&) = delete;
  TensorBoardWriter& operator=(const TensorBoardWriter&) = delete;

  // One scalar event per value (tag = the name, as in the JSONL file), stamped with the current
  // wall time, written with a single write().
  Status Write(const StepMetrics& metrics);
  Status WriteScalars(int64_t step, const Scalars& scalars);

  const std::string& path() const { return path_; }

 private:
  TensorBoardWriter() = default;
  std::string path_;
  int fd_ = -1;
};

// ---- Progress line ----

// "step 12/1000 | loss 1.2345 | lr 3.0e-04 | grad 0.812 | 12.3k tok/s | ETA 1h02m".
// A negative or non-finite eta_seconds prints "ETA --".
std::string FormatProgressLine(const StepMetrics& metrics, int64_t total_steps, double eta_seconds);

// "950", "12.3k", "4.56M": the rate as printed before " tok/s".
std::string FormatRate(double per_second);
// "42s", "12m05s", "1h02m", "3d04h"; "--" if negative or not finite.
std::string FormatDuration(double seconds);

}  // namespace indexcache
