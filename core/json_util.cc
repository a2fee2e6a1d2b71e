#include "core/json_util.h"

#include <cmath>

namespace indexcache {

using json = nlohmann::json;

std::string JsonBrief(const json& v) {
  switch (v.type()) {
    case json::value_t::array:
      return "an array of " + std::to_string(v.size()) + " entr" + (v.size() == 1 ? "y" : "ies");
    case json::value_t::object:
      return "an object of " + std::to_string(v.size()) + " field" + (v.size() == 1 ? "" : "s");
    case json::value_t::string: {
      const std::string& s = v.get_ref<const std::string&>();
      constexpr size_t kMax = 40;
      // Cut on a character boundary so that the message stays valid UTF-8.
      size_t cut = std::min(s.size(), kMax);
      while (cut < s.size() && cut > 0 && (static_cast<unsigned char>(s[cut]) & 0xC0) == 0x80) --cut;
      json shown = s.substr(0, cut);
      return shown.dump(-1, ' ', false, json::error_handler_t::replace) + (cut < s.size() ? "..." : "");
    }
    default:  // scalars: dump() does not recurse
      return v.dump();
  }
}

StatusOr<json> ParseJson(const std::string& text, const std::string& source) {
  json j = json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded()) return InvalidArgument(source + ": malformed JSON");
  return j;
}

Status JsonFields::Error(const std::string& field, const std::string& what) const {
  return InvalidArgument(source_ + ": field '" + prefix_ + field + "' " + what);
}

const json* JsonFields::Find(const std::string& field) const {
  if (!j_.is_object()) return nullptr;
  const auto it = j_.find(field);
  if (it == j_.end() || it->is_null()) return nullptr;
  return &*it;
}

bool JsonFields::Has(const std::string& field) const { return Find(field) != nullptr; }

StatusOr<int64_t> JsonFields::Int(const std::string& field, int64_t min_value, int64_t max_value) const {
  const json* v = Find(field);
  if (!v) return Error(field, "is missing");
  const std::string range = "in [" + std::to_string(min_value) + ", " + std::to_string(max_value) + "]";
  if (!v->is_number_integer()) return Error(field, "must be an integer " + range + ", got " + JsonBrief(*v));
  // Unsigned values above INT64_MAX are out of range, not wrapped to negatives.
  if (v->is_number_unsigned() && v->get<uint64_t>() > static_cast<uint64_t>(max_value)) {
    return Error(field, "must be " + range + ", got " + JsonBrief(*v));
  }
  const int64_t n = v->get<int64_t>();
  if (n < min_value || n > max_value) return Error(field, "must be " + range + ", got " + std::to_string(n));
  return n;
}

StatusOr<int64_t> JsonFields::IntOr(const std::string& field, int64_t def, int64_t min_value,
                                    int64_t max_value) const {
  return Has(field) ? Int(field, min_value, max_value) : StatusOr<int64_t>(def);
}

StatusOr<double> JsonFields::Double(const std::string& field) const {
  const json* v = Find(field);
  if (!v) return Error(field, "is missing");
  if (!v->is_number()) return Error(field, "must be a number, got " + JsonBrief(*v));
  const double d = v->get<double>();
  if (!std::isfinite(d)) return Error(field, "must be a finite number, got " + JsonBrief(*v));
  return d;
}

StatusOr<double> JsonFields::DoubleOr(const std::string& field, double def) const {
  return Has(field) ? Double(field) : StatusOr<double>(def);
}

StatusOr<bool> JsonFields::BoolOr(const std::string& field, bool def) const {
  const json* v = Find(field);
  if (!v) return def;
  if (!v->is_boolean()) return Error(field, "must be true or false, got " + JsonBrief(*v));
  return v->get<bool>();
}

StatusOr<std::string> JsonFields::String(const std::string& field) const {
  const json* v = Find(field);
  if (!v) return Error(field, "is missing");
  if (!v->is_string()) return Error(field, "must be a string, got " + JsonBrief(*v));
  return v->get<std::string>();
}

StatusOr<std::string> JsonFields::StringOr(const std::string& field, const std::string& def) const {
  return Has(field) ? String(field) : StatusOr<std::string>(def);
}

}  // namespace indexcache
