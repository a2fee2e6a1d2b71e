// Status and StatusOr: error handling for configuration, files and set-up.
//
// Errors are values, not exceptions: every function that can fail on bad input returns a Status
// (or StatusOr<T>) whose message is one line naming the file and the tensor or field at fault.
// Command-line front ends print that line and exit with code 1.
#pragma once

#include <cstdio>
#include <cstdlib>
#include <optional>
#include <string>
#include <utility>

namespace indexcache {

enum class StatusCode {
  kOk = 0,
  kInvalidArgument,  // malformed input: a bad config field, shape, pattern, token id
  kNotFound,         // a missing file or tensor
  kDataLoss,         // a truncated or corrupt file
  kUnimplemented,    // a valid but unsupported feature
  kInternal,         // an invariant of ours broke
  kIoError,          // the operating system refused a read or write
};

const char* StatusCodeName(StatusCode code);

class [[nodiscard]] Status {
 public:
  Status() = default;
  Status(StatusCode code, std::string message) : code_(code), message_(std::move(message)) {}

  static Status Ok() { return Status(); }
  bool ok() const { return code_ == StatusCode::kOk; }
  StatusCode code() const { return code_; }
  const std::string& message() const { return message_; }
  // "INVALID_ARGUMENT: config.json: field 'hidden_size' must be positive".
  std::string ToString() const;

  // Returns a copy whose message is prefixed with `context: `.
  Status WithContext(const std::string& context) const;

 private:
  StatusCode code_ = StatusCode::kOk;
  std::string message_;
};

// `text` (a value from a file or the command line) made fit to echo inside a one-line message:
// control characters (newlines included) become escapes like "\n" or "\x01", and anything past
// `max_len` bytes becomes "...".
std::string Printable(const std::string& text, size_t max_len = 64);

Status InvalidArgument(std::string message);
Status NotFound(std::string message);
Status DataLoss(std::string message);
Status Unimplemented(std::string message);
Status Internal(std::string message);
Status IoError(std::string message);

template <typename T>
class [[nodiscard]] StatusOr {
 public:
  // Initialised, not assigned: nvcc warns on assigning a [[nodiscard]] type (CUDA headers include this).
  StatusOr(const Status& status)  // NOLINT: implicit by design
      : status_(status.ok() ? Internal("StatusOr constructed from an OK status without a value") : status) {}
  StatusOr(T value) : value_(std::move(value)) {}  // NOLINT: implicit by design

  bool ok() const { return status_.ok(); }
  const Status& status() const { return status_; }
  T& value() & { CheckOk(); return *value_; }
  const T& value() const& { CheckOk(); return *value_; }
  T&& value() && { CheckOk(); return std::move(*value_); }
  T& operator*() & { return value(); }
  const T& operator*() const& { return value(); }
  T* operator->() { return &value(); }
  const T* operator->() const { return &value(); }

 private:
  void CheckOk() const {
    if (!status_.ok()) {
      std::fprintf(stderr, "fatal: value() on an error StatusOr: %s\n", status_.ToString().c_str());
      std::abort();
    }
  }
  Status status_;
  std::optional<T> value_;
};

}  // namespace indexcache

#define IC_CONCAT_INNER(a, b) a##b
#define IC_CONCAT(a, b) IC_CONCAT_INNER(a, b)

// Returns from the enclosing function if `expr` is an error Status.
#define RETURN_IF_ERROR(expr)                         \
  do {                                                \
    ::indexcache::Status _ic_status = (expr);         \
    if (!_ic_status.ok()) return _ic_status;          \
  } while (0)

// `ASSIGN_OR_RETURN(auto x, F());` binds the value of a StatusOr or returns its error.
#define ASSIGN_OR_RETURN(lhs, expr) ASSIGN_OR_RETURN_IMPL(IC_CONCAT(_ic_statusor_, __LINE__), lhs, expr)
#define ASSIGN_OR_RETURN_IMPL(tmp, lhs, expr) \
  auto tmp = (expr);                          \
  if (!tmp.ok()) return tmp.status();         \
  lhs = std::move(tmp).value()

// For invariants (not user input): prints file:line and aborts.
#define IC_CHECK(cond)                                                                   \
  do {                                                                                   \
    if (!(cond)) {                                                                       \
      std::fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, __LINE__, #cond);      \
      std::abort();                                                                      \
    }                                                                                    \
  } while (0)
