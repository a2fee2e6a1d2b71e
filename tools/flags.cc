#include "tools/flags.h"

#include <cstdio>
#include <sstream>
#include <stdexcept>

#include "core/limits.h"

namespace indexcache {

StatusOr<Flags> Flags::Parse(const std::vector<std::string>& args, const std::vector<FlagSpec>& specs) {
  Flags flags;
  for (size_t i = 0; i < args.size(); ++i) {
    std::string arg = args[i];
    if (arg == "--help" || arg == "-h") {
      flags.help_ = true;
      continue;
    }
    if (arg.rfind("--", 0) != 0) return InvalidArgument("unexpected argument '" + arg + "'");
    arg = arg.substr(2);
    std::optional<std::string> value;
    const size_t eq = arg.find('=');
    if (eq != std::string::npos) {
      value = arg.substr(eq + 1);
      arg = arg.substr(0, eq);
    }
    const FlagSpec* spec = nullptr;
    for (const FlagSpec& s : specs) {
      if (s.name == arg) spec = &s;
    }
    if (!spec) return InvalidArgument("unknown flag --" + arg);
    if (spec->is_bool) {
      if (value) return InvalidArgument("flag --" + arg + " takes no value");
      flags.values_[arg] = "true";
      continue;
    }
    if (!value) {
      if (i + 1 >= args.size()) return InvalidArgument("flag --" + arg + " needs a value");
      value = args[++i];
    }
    flags.values_[arg] = *value;
    flags.repeated_[arg].push_back(*value);
  }
  if (!flags.help_) {
    for (const FlagSpec& s : specs) {
      if (s.required && !flags.Has(s.name)) return InvalidArgument("missing required flag --" + s.name);
    }
  }
  return flags;
}

std::string Flags::Usage(const std::string& command, const std::string& summary, const std::vector<FlagSpec>& specs) {
  std::string out = "usage: indexcache " + command;
  for (const FlagSpec& s : specs) {
    if (s.required) out += " --" + s.name + " " + (s.is_bool ? "" : "VALUE");
  }
  out += " [flags]\n\n" + summary + "\n\nflags:\n";
  for (const FlagSpec& s : specs) {
    char line[512];
    std::snprintf(line, sizeof(line), "  --%-18s %s%s%s\n", s.name.c_str(), s.help.c_str(),
                  s.default_value.empty() ? "" : " (default: ", s.default_value.empty() ? "" : (s.default_value + ")").c_str());
    out += line;
  }
  return out;
}

std::optional<std::string> Flags::Get(const std::string& name) const {
  auto it = values_.find(name);
  if (it == values_.end()) return std::nullopt;
  return it->second;
}

std::string Flags::GetOr(const std::string& name, const std::string& def) const { return Get(name).value_or(def); }

StatusOr<int64_t> Flags::GetInt(const std::string& name, int64_t def, int64_t min_value, int64_t max_value) const {
  auto v = Get(name);
  if (!v) return def;
  const std::string range = "[" + std::to_string(min_value) + ", " + std::to_string(max_value) + "]";
  const std::string shown = Printable(*v, 40);
  int64_t n = 0;
  try {
    size_t used = 0;
    n = std::stoll(*v, &used);
    if (used != v->size()) throw std::invalid_argument("trailing");
  } catch (const std::out_of_range&) {
    return InvalidArgument("flag --" + name + " must be in " + range + ", got '" + shown + "'");
  } catch (...) {
    return InvalidArgument("flag --" + name + " needs an integer in " + range + ", got '" + shown + "'");
  }
  if (n < min_value || n > max_value) {
    return InvalidArgument("flag --" + name + " must be in " + range + ", got " + std::to_string(n));
  }
  return n;
}

const std::vector<std::string>& Flags::repeated(const std::string& name) const {
  static const std::vector<std::string> kEmpty;
  auto it = repeated_.find(name);
  return it == repeated_.end() ? kEmpty : it->second;
}

StatusOr<std::vector<int64_t>> ParseInts(const std::string& text, const std::string& flag) {
  std::vector<int64_t> out;
  std::stringstream ss(text);
  std::string item;
  while (std::getline(ss, item, ',')) {
    try {
      out.push_back(std::stoll(item));
    } catch (...) {
      return InvalidArgument("--" + flag + ": '" + item + "' is not an integer");
    }
    if (out.back() < 1 || out.back() > kMaxSeqLen) {
      return InvalidArgument("--" + flag + ": values must be in [1, " + std::to_string(kMaxSeqLen) + "]");
    }
  }
  if (out.empty()) return InvalidArgument("--" + flag + " is empty");
  return out;
}

}  // namespace indexcache
