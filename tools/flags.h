// A small command-line flag parser for the indexcache subcommands.
//
// Accepts `--name value` and `--name=value`; boolean flags take no value. Unknown flags, missing
// values and missing required flags are errors that name the flag.
#pragma once

#include <map>
#include <optional>
#include <string>
#include <vector>

#include "core/status.h"

namespace indexcache {

struct FlagSpec {
  std::string name;   // without dashes
  std::string help;
  bool is_bool = false;
  bool required = false;
  std::string default_value;  // shown in help; empty = none
};

class Flags {
 public:
  // Parses args (after the subcommand). `--help` sets help_requested().
  static StatusOr<Flags> Parse(const std::vector<std::string>& args, const std::vector<FlagSpec>& specs);
  static std::string Usage(const std::string& command, const std::string& summary, const std::vector<FlagSpec>& specs);

  bool help_requested() const { return help_; }
  bool Has(const std::string& name) const { return values_.count(name) != 0; }
  std::optional<std::string> Get(const std::string& name) const;
  std::string GetOr(const std::string& name, const std::string& def) const;
  bool GetBool(const std::string& name) const { return Has(name); }
  // An integer in [min_value, max_value] (bounds from core/limits.h for sizes): an error names
  // the flag and the range, so that no flag can feed an absurd size into an allocation.
  StatusOr<int64_t> GetInt(const std::string& name, int64_t def, int64_t min_value, int64_t max_value) const;
  const std::vector<std::string>& repeated(const std::string& name) const;

 private:
  bool help_ = false;
  std::map<std::string, std::string> values_;
  std::map<std::string, std::vector<std::string>> repeated_;
};

// A comma-separated list of lengths for flag `flag` ("8192,32768"): each in [1, kMaxSeqLen];
// errors name the flag.
StatusOr<std::vector<int64_t>> ParseInts(const std::string& text, const std::string& flag);

}  // namespace indexcache
