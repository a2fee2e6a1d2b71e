#include "model/pattern.h"

#include <algorithm>

#include "core/file_util.h"
#include "core/json_util.h"

namespace indexcache {

using json = nlohmann::json;

IndexPattern IndexPattern::AllFull(int num_layers) {
  IndexPattern p;
  p.full_.assign(num_layers, true);
  return p;
}

StatusOr<IndexPattern> IndexPattern::FromFlags(std::vector<bool> full, const std::string& source) {
  if (full.empty()) return InvalidArgument(source + ": empty pattern");
  if (!full[0]) return InvalidArgument(source + ": layer 0 must be F (Full): a Shared layer needs a preceding Full layer");
  IndexPattern p;
  p.full_ = std::move(full);
  return p;
}

StatusOr<IndexPattern> IndexPattern::Parse(const std::string& spec, int num_layers, const std::string& source) {
  if (spec == "all" || spec == "full") return AllFull(num_layers);
  if (spec.size() > 5 && spec.compare(spec.size() - 5, 5, ".json") == 0) {
    // A result file of `indexcache search` (or any JSON object with a "pattern" string).
    ASSIGN_OR_RETURN(std::string text, ReadFileToString(spec));
    const json j = json::parse(text, nullptr, /*allow_exceptions=*/false);
    if (!j.is_object() || !j.contains("pattern") || !j["pattern"].is_string()) {
      return InvalidArgument(source + ": " + spec + ": expected a JSON object with a string field 'pattern'");
    }
    return Parse(j["pattern"].get<std::string>(), num_layers, source + " (" + spec + ")");
  }
  const size_t slash = spec.find('/');
  if (slash != std::string::npos) {
    const std::string num = spec.substr(0, slash), den = spec.substr(slash + 1);
    const auto is_digits = [](const std::string& s) {
      return !s.empty() && s.size() < 6 && std::all_of(s.begin(), s.end(), [](char c) { return c >= '0' && c <= '9'; });
    };
    if (!is_digits(num) || !is_digits(den) || std::stoi(num) != 1 || std::stoi(den) < 1) {
      return InvalidArgument(source + ": ratio '" + spec + "' must be 1/N with N >= 1");
    }
    const int n = std::stoi(den);
    std::vector<bool> full(num_layers);
    for (int l = 0; l < num_layers; ++l) full[l] = (l % n == 0);
    return FromFlags(std::move(full), source);
  }
  if (static_cast<int>(spec.size()) != num_layers) {
    return InvalidArgument(source + ": pattern '" + spec + "' has " + std::to_string(spec.size()) +
                           " letters but the model has " + std::to_string(num_layers) + " layers");
  }
  std::vector<bool> full(num_layers);
  for (int l = 0; l < num_layers; ++l) {
    const char c = spec[l];
    if (c != 'F' && c != 'S') {
      return InvalidArgument(source + ": pattern '" + spec + "' has '" + std::string(1, c) + "' at layer " +
                             std::to_string(l) + " (only F and S are allowed)");
    }
    full[l] = (c == 'F');
  }
  return FromFlags(std::move(full), source);
}

IndexPattern IndexPattern::FromFrequency(int num_layers, int freq, int offset) {
  freq = std::max(freq, 1);
  IndexPattern p;
  p.full_.resize(num_layers);
  for (int l = 0; l < num_layers; ++l) p.full_[l] = (std::max(l - offset + 1, 0) % freq) == 0;
  return p;
}

StatusOr<IndexPattern> IndexPattern::FromConfig(const json& config, int num_layers, const std::string& source) {
  if (config.contains("indexer_types") && !config["indexer_types"].is_null()) {
    const json& types = config["indexer_types"];
    const std::string where = source + ": field 'indexer_types'";
    if (!types.is_array()) return InvalidArgument(where + " must be a list of \"full\"/\"shared\"");
    if (static_cast<int>(types.size()) != num_layers) {
      return InvalidArgument(where + " has " + std::to_string(types.size()) + " entries but num_hidden_layers is " +
                             std::to_string(num_layers));
    }
    std::vector<bool> full(num_layers);
    for (int l = 0; l < num_layers; ++l) {
      const json& t = types[l];
      if (t == "full") full[l] = true;
      else if (t == "shared") full[l] = false;
      else return InvalidArgument(where + "[" + std::to_string(l) + "] is " + JsonBrief(t) + " (need \"full\" or \"shared\")");
    }
    return FromFlags(std::move(full), where);
  }
  if (config.contains("index_topk_pattern") && !config["index_topk_pattern"].is_null()) {
    const json& pat = config["index_topk_pattern"];
    const std::string where = source + ": field 'index_topk_pattern'";
    std::string spec;
    if (pat.is_string()) {
      spec = pat.get<std::string>();
    } else if (pat.is_array()) {
      for (const json& c : pat) {
        if (!c.is_string() || c.get<std::string>().size() != 1) return InvalidArgument(where + " must be a string of F/S");
        spec += c.get<std::string>();
      }
    } else {
      return InvalidArgument(where + " must be a string of F/S");
    }
    if (spec.find('/') != std::string::npos || spec == "all" || spec == "full") {
      return InvalidArgument(where + " must be a string of F/S, one letter per layer");
    }
    return Parse(spec, num_layers, where);
  }
  if (config.contains("index_topk_freq") && !config["index_topk_freq"].is_null()) {
    const json& f = config["index_topk_freq"];
    if (!f.is_number_integer() || f.get<int64_t>() < 1) {
      return InvalidArgument(source + ": field 'index_topk_freq' must be an integer >= 1");
    }
    int offset = 2;
    if (config.contains("index_skip_topk_offset") && !config["index_skip_topk_offset"].is_null()) {
      const json& o = config["index_skip_topk_offset"];
      if (!o.is_number_integer() || o.get<int64_t>() < 0) {
        return InvalidArgument(source + ": field 'index_skip_topk_offset' must be a non-negative integer");
      }
      offset = static_cast<int>(o.get<int64_t>());
    }
    IndexPattern p = FromFrequency(num_layers, static_cast<int>(f.get<int64_t>()), offset);
    if (num_layers > 0 && !p.full_[0]) {
      return InvalidArgument(source + ": index_topk_freq/index_skip_topk_offset make layer 0 Shared");
    }
    return p;
  }
  return AllFull(num_layers);
}

int IndexPattern::num_full() const { return static_cast<int>(std::count(full_.begin(), full_.end(), true)); }

int IndexPattern::source_of(int layer) const {
  while (layer > 0 && !full_[layer]) --layer;
  return layer;
}

std::vector<int> IndexPattern::served_by(int full_layer) const {
  std::vector<int> out = {full_layer};
  for (int l = full_layer + 1; l < num_layers() && !full_[l]; ++l) out.push_back(l);
  return out;
}

std::string IndexPattern::ToString() const {
  std::string s;
  for (bool f : full_) s.push_back(f ? 'F' : 'S');
  return s;
}

bool IndexPattern::AsFrequency(int* freq, int* offset) const {
  for (int f = 1; f <= std::max(num_layers(), 1); ++f) {
    for (int o = 1; o <= num_layers(); ++o) {
      if (FromFrequency(num_layers(), f, o).full_ == full_) {
        *freq = f;
        *offset = o;
        return true;
      }
    }
  }
  return false;
}

}  // namespace indexcache
