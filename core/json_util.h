// Checked access to parsed JSON (config.json, safetensors headers and indexes, trainer state).
//
// nlohmann::json throws on a type mismatch (`value("x", "")` on a number is type_error.302) and
// `dump()` recurses once per nesting level, so echoing a 300,000-deep array in an error message
// overflows the stack. Every read of an untrusted document goes through these helpers instead:
// they never throw, they name the field ("<source>: field 'a.b' ..."), and JsonBrief() echoes at
// most a short prefix of a bad value without descending into containers.
#pragma once

#include <cstdint>
#include <string>

#include <nlohmann/json.hpp>

#include "core/status.h"

namespace indexcache {

// A short, non-recursive rendering for messages: scalars as JSON (strings cut to 40 characters),
// containers as "an array of 3 entries" / "an object of 2 fields".
std::string JsonBrief(const nlohmann::json& value);

// Parses `text`; an error (never an exception) names `source`.
StatusOr<nlohmann::json> ParseJson(const std::string& text, const std::string& source);

// Field readers over one JSON object. `prefix` is prepended to field names in messages
// ("rope_scaling." gives "field 'rope_scaling.factor'"). Absent and null fields count as missing.
class JsonFields {
 public:
  JsonFields(const nlohmann::json& object, std::string source, std::string prefix = "")
      : j_(object), source_(std::move(source)), prefix_(std::move(prefix)) {}

  Status Error(const std::string& field, const std::string& what) const;
  bool Has(const std::string& field) const;
  // The field itself (nullptr when missing).
  const nlohmann::json* Find(const std::string& field) const;

  // Integers in [min_value, max_value]; a number with a fraction or a string is an error.
  StatusOr<int64_t> Int(const std::string& field, int64_t min_value, int64_t max_value) const;
  StatusOr<int64_t> IntOr(const std::string& field, int64_t def, int64_t min_value, int64_t max_value) const;
  // Finite numbers (NaN/Inf cannot come from JSON, but huge exponents can overflow to Inf).
  StatusOr<double> Double(const std::string& field) const;
  StatusOr<double> DoubleOr(const std::string& field, double def) const;
  StatusOr<bool> BoolOr(const std::string& field, bool def) const;
  StatusOr<std::string> String(const std::string& field) const;
  StatusOr<std::string> StringOr(const std::string& field, const std::string& def) const;

 private:
  const nlohmann::json& j_;
  std::string source_, prefix_;
};

}  // namespace indexcache
