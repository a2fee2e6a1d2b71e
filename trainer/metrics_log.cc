#include "trainer/metrics_log.h"

#include <fcntl.h>
#include <unistd.h>

#include <array>
#include <cerrno>
#include <chrono>
#include <cinttypes>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <nlohmann/json.hpp>

#include "core/file_util.h"
#include "trainer/fs_util.h"

namespace indexcache {

namespace {

std::string Errno() { return std::strerror(errno); }

// Byte-at-a-time table; a few hundred records a step is nothing next to a training step.
const std::array<uint32_t, 256>& Crc32cTable() {
  static const std::array<uint32_t, 256> table = [] {
    std::array<uint32_t, 256> t{};
    for (uint32_t i = 0; i < 256; ++i) {
      uint32_t c = i;
      for (int k = 0; k < 8; ++k) c = (c & 1) ? (c >> 1) ^ 0x82F63B78u : c >> 1;
      t[i] = c;
    }
    return t;
  }();
  return table;
}

constexpr uint32_t kCrcMaskDelta = 0xa282ead8u;

void PutFixed32(std::string* out, uint32_t v) {
  for (int i = 0; i < 4; ++i) out->push_back(static_cast<char>((v >> (8 * i)) & 0xff));
}
void PutFixed64(std::string* out, uint64_t v) {
  for (int i = 0; i < 8; ++i) out->push_back(static_cast<char>((v >> (8 * i)) & 0xff));
}
void PutVarint(std::string* out, uint64_t v) {
  while (v >= 0x80) {
    out->push_back(static_cast<char>((v & 0x7f) | 0x80));
    v >>= 7;
  }
  out->push_back(static_cast<char>(v));
}

// Protobuf wire format: key = field_number << 3 | wire type.
enum WireType : uint32_t { kVarint = 0, kFixed64 = 1, kLengthDelimited = 2, kFixed32 = 5 };
void PutKey(std::string* out, uint32_t field, WireType type) { PutVarint(out, (field << 3) | type); }
void PutDoubleField(std::string* out, uint32_t field, double v) {
  uint64_t bits;
  std::memcpy(&bits, &v, sizeof(bits));
  PutKey(out, field, kFixed64);
  PutFixed64(out, bits);
}
void PutFloatField(std::string* out, uint32_t field, float v) {
  uint32_t bits;
  std::memcpy(&bits, &v, sizeof(bits));
  PutKey(out, field, kFixed32);
  PutFixed32(out, bits);
}
void PutBytesField(std::string* out, uint32_t field, const std::string& bytes) {
  PutKey(out, field, kLengthDelimited);
  PutVarint(out, bytes.size());
  out->append(bytes);
}

// Field numbers of tensorflow/core/util/event.proto and framework/summary.proto.
constexpr uint32_t kEventWallTime = 1, kEventStep = 2, kEventFileVersion = 3, kEventSummary = 5;
constexpr uint32_t kSummaryValue = 1;
constexpr uint32_t kValueTag = 1, kValueSimpleValue = 2;

double WallTime() {
  return std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count();
}

Status WriteAll(int fd, const std::string& path, const std::string& bytes) {
  const char* p = bytes.data();
  size_t left = bytes.size();
  while (left > 0) {
    const ssize_t n = ::write(fd, p, left);
    if (n < 0) {
      if (errno == EINTR) continue;
      return IoError(path + ": write failed: " + Errno());
    }
    p += n;
    left -= static_cast<size_t>(n);
  }
  return Status::Ok();
}

}  // namespace

uint32_t Crc32c(const void* data, size_t size, uint32_t crc) {
  const auto& table = Crc32cTable();
  const uint8_t* p = static_cast<const uint8_t*>(data);
  crc = ~crc;
  for (size_t i = 0; i < size; ++i) crc = table[(crc ^ p[i]) & 0xff] ^ (crc >> 8);
  return ~crc;
}

uint32_t MaskCrc32c(uint32_t crc) { return ((crc >> 15) | (crc << 17)) + kCrcMaskDelta; }

uint32_t UnmaskCrc32c(uint32_t masked) {
  const uint32_t rot = masked - kCrcMaskDelta;
  return (rot >> 17) | (rot << 15);
}

std::string FrameTfRecord(const std::string& data) {
  std::string out;
  out.reserve(data.size() + 16);
  PutFixed64(&out, data.size());
  PutFixed32(&out, MaskCrc32c(Crc32c(out.data(), 8)));
  out.append(data);
  PutFixed32(&out, MaskCrc32c(Crc32c(data.data(), data.size())));
  return out;
}

std::string EncodeFileVersionEvent(double wall_time) {
  std::string event;
  PutDoubleField(&event, kEventWallTime, wall_time);
  PutBytesField(&event, kEventFileVersion, "brain.Event:2");
  return event;
}

std::string EncodeScalarEvent(double wall_time, int64_t step, const std::string& tag, float value) {
  std::string summary_value;
  PutBytesField(&summary_value, kValueTag, tag);
  PutFloatField(&summary_value, kValueSimpleValue, value);
  std::string summary;
  PutBytesField(&summary, kSummaryValue, summary_value);

  std::string event;
  PutDoubleField(&event, kEventWallTime, wall_time);
  // int64 varint: negative steps take ten bytes, as protobuf encodes them.
  PutKey(&event, kEventStep, kVarint);
  PutVarint(&event, static_cast<uint64_t>(step));
  PutBytesField(&event, kEventSummary, summary);
  return event;
}

Scalars StepMetrics::AllScalars() const {
  Scalars all = {{"loss", loss}, {"lr", lr}, {"grad_norm", grad_norm}, {"tokens_per_s", tokens_per_s}};
  all.insert(all.end(), extra.begin(), extra.end());
  return all;
}

// ---- JsonlWriter ----

Status TruncateJsonlAfterStep(const std::string& path, int64_t step) {
  if (!FileExists(path)) return Status::Ok();
  ASSIGN_OR_RETURN(const std::string text, ReadFileToString(path));
  std::string kept;
  size_t begin = 0;
  while (begin < text.size()) {
    size_t end = text.find('\n', begin);
    if (end == std::string::npos) break;  // an unterminated last line: cut short by a crash
    const std::string line = text.substr(begin, end - begin);
    begin = end + 1;
    const nlohmann::json j = nlohmann::json::parse(line, nullptr, /*allow_exceptions=*/false);
    if (j.is_discarded() || !j.is_object()) continue;
    const auto it = j.find("step");
    if (it == j.end() || !it->is_number_integer() || it->get<int64_t>() > step) continue;
    kept += line + "\n";
  }
  if (kept.size() == text.size()) return Status::Ok();
  return WriteFileAtomic(path, kept);
}

StatusOr<std::unique_ptr<JsonlWriter>> JsonlWriter::Open(const std::string& path, bool append) {
  RETURN_IF_ERROR(MakeDirectories(DirName(path)));
  std::unique_ptr<JsonlWriter> w(new JsonlWriter());
  w->path_ = path;
  // O_APPEND: each line lands whole at the end even if the file was appended to meanwhile.
  const int flags = O_WRONLY | O_CREAT | O_CLOEXEC | (append ? O_APPEND : O_TRUNC);
  w->fd_ = ::open(path.c_str(), flags, 0644);
  if (w->fd_ < 0) return IoError(path + ": cannot open for writing: " + Errno());
  return w;
}

JsonlWriter::~JsonlWriter() {
  if (fd_ >= 0) ::close(fd_);
}

Status JsonlWriter::WriteLine(const std::string& line) { return WriteAll(fd_, path_, line + "\n"); }

Status JsonlWriter::Write(const StepMetrics& metrics) {
  return WriteScalars(metrics.step, metrics.AllScalars());
}

Status JsonlWriter::WriteScalars(int64_t step, const Scalars& scalars) {
  // ordered_json keeps "step" first and the caller's order after it.
  nlohmann::ordered_json line;
  line["step"] = step;
  for (const auto& [name, value] : scalars) {
    if (std::isfinite(value)) {
      line[name] = value;
    } else {
      line[name] = nullptr;
    }
  }
  return WriteLine(line.dump(-1, ' ', false, nlohmann::ordered_json::error_handler_t::replace));
}

// ---- TensorBoardWriter ----

StatusOr<std::unique_ptr<TensorBoardWriter>> TensorBoardWriter::Create(const std::string& dir) {
  RETURN_IF_ERROR(MakeDirectories(dir));
  const double now = WallTime();
  const std::string base =
      JoinPath(dir, "events.out.tfevents." + std::to_string(static_cast<int64_t>(now)) + "." + HostName());
  std::unique_ptr<TensorBoardWriter> w(new TensorBoardWriter());
  // Two writers started within the same second (a quick restart) must not share a file.
  for (int attempt = 0; attempt < 1000; ++attempt) {
    w->path_ = attempt == 0 ? base : base + "." + std::to_string(attempt);
    w->fd_ = ::open(w->path_.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_APPEND | O_CLOEXEC, 0644);
    if (w->fd_ >= 0 || errno != EEXIST) break;
  }
  if (w->fd_ < 0) return IoError(w->path_ + ": cannot create event file: " + Errno());
  RETURN_IF_ERROR(WriteAll(w->fd_, w->path_, FrameTfRecord(EncodeFileVersionEvent(now))));
  return w;
}

TensorBoardWriter::~TensorBoardWriter() {
  if (fd_ >= 0) ::close(fd_);
}

Status TensorBoardWriter::Write(const StepMetrics& metrics) {
  return WriteScalars(metrics.step, metrics.AllScalars());
}

Status TensorBoardWriter::WriteScalars(int64_t step, const Scalars& scalars) {
  const double now = WallTime();
  std::string records;
  for (const auto& [tag, value] : scalars) {
    records += FrameTfRecord(EncodeScalarEvent(now, step, tag, static_cast<float>(value)));
  }
  return WriteAll(fd_, path_, records);
}

// ---- Progress line ----

std::string FormatRate(double per_second) {
  char buf[32];
  if (!std::isfinite(per_second) || per_second < 0) return "--";
  if (per_second < 999.5) {
    std::snprintf(buf, sizeof(buf), "%.0f", per_second);
  } else if (per_second < 999.95e3) {
    std::snprintf(buf, sizeof(buf), "%.1fk", per_second / 1e3);
  } else if (per_second < 999.95e6) {
    std::snprintf(buf, sizeof(buf), "%.1fM", per_second / 1e6);
  } else {
    std::snprintf(buf, sizeof(buf), "%.1fG", per_second / 1e9);
  }
  return buf;
}

std::string FormatDuration(double seconds) {
  if (!std::isfinite(seconds) || seconds < 0) return "--";
  const int64_t s = std::llround(seconds);
  char buf[48];
  if (s < 60) {
    std::snprintf(buf, sizeof(buf), "%" PRId64 "s", s);
  } else if (s < 3600) {
    std::snprintf(buf, sizeof(buf), "%" PRId64 "m%02" PRId64 "s", s / 60, s % 60);
  } else if (s < 86400) {
    std::snprintf(buf, sizeof(buf), "%" PRId64 "h%02" PRId64 "m", s / 3600, (s % 3600) / 60);
  } else {
    std::snprintf(buf, sizeof(buf), "%" PRId64 "d%02" PRId64 "h", s / 86400, (s % 86400) / 3600);
  }
  return buf;
}

std::string FormatProgressLine(const StepMetrics& m, int64_t total_steps, double eta_seconds) {
  char buf[256];
  std::snprintf(buf, sizeof(buf),
                "step %" PRId64 "/%" PRId64 " | loss %.4f | lr %.1e | grad %.3f | %s tok/s | ETA %s", m.step,
                total_steps, m.loss, m.lr, m.grad_norm, FormatRate(m.tokens_per_s).c_str(),
                FormatDuration(eta_seconds).c_str());
  return buf;
}

}  // namespace indexcache
