#include "search/search_record.h"

#include "core/file_util.h"

namespace indexcache {

using json = nlohmann::json;

StatusOr<IndexPattern> SearchRecord::CurrentPattern() const {
  ASSIGN_OR_RETURN(IndexPattern start, IndexPattern::Parse(start_pattern, static_cast<int>(start_pattern.size()),
                                                           "start_pattern"));
  std::string p = start.ToString();
  const int n = static_cast<int>(p.size());
  for (const SearchStep& s : steps) {
    if (s.kind == "greedy") {
      if (s.layer < 1 || s.layer >= n || p[s.layer] != 'F') {
        return InvalidArgument("step flips layer " + std::to_string(s.layer) + ", which is not a Full layer there");
      }
      p[s.layer] = 'S';
    } else {
      if (s.from < 1 || s.from >= n || s.to < 1 || s.to >= n || p[s.from] != 'F' || p[s.to] != 'S') {
        return InvalidArgument("refine step moves " + std::to_string(s.from) + ">" + std::to_string(s.to) +
                               ", which is not a Full layer moving to a Shared one");
      }
      p[s.from] = 'S';
      p[s.to] = 'F';
    }
  }
  return IndexPattern::Parse(p, n, "search steps");
}

namespace {

json UniformJson(const UniformPoint& u) {
  json j = {{"ratio", u.ratio}, {"pattern", u.pattern.empty() ? json(nullptr) : json(u.pattern)}};
  j["loss"] = u.pattern.empty() ? json(nullptr) : json(u.loss);
  return j;
}

std::vector<int> FullLayers(const std::string& p) {
  std::vector<int> full;
  for (size_t l = 0; l < p.size(); ++l) {
    if (p[l] == 'F') full.push_back(static_cast<int>(l));
  }
  return full;
}

json ConfigKeys(const std::string& p) {
  json types = json::array();
  for (char c : p) types.push_back(c == 'F' ? "full" : "shared");
  json keys = {{"index_topk_pattern", p}, {"indexer_types", types}};
  auto parsed = IndexPattern::Parse(p, static_cast<int>(p.size()));
  int freq = 0, offset = 0;
  if (parsed.ok() && parsed->AsFrequency(&freq, &offset)) {
    keys["index_topk_freq"] = freq;
    keys["index_skip_topk_offset"] = offset;
  }
  return keys;
}

}  // namespace

json SearchRecord::ToJson() const {
  auto current = CurrentPattern();
  const std::string pattern = current.ok() ? current->ToString() : start_pattern;
  json j;
  j["pattern"] = pattern;
  j["full_layers"] = FullLayers(pattern);
  j["num_full"] = FullLayers(pattern).size();
  j["baseline_loss"] = baseline_loss;
  j["final_loss"] = current_loss();
  j["done"] = done;
  json steps_json = json::array();
  for (const SearchStep& s : steps) {
    json o = {{"kind", s.kind}, {"loss", s.loss}, {"candidates", s.candidates}};
    if (s.kind == "greedy") {
      o["layer"] = s.layer;
    } else {
      o["from"] = s.from;
      o["to"] = s.to;
    }
    steps_json.push_back(o);
  }
  j["steps"] = steps_json;
  if (!greedy_pattern.empty()) {
    j["greedy"] = {{"pattern", greedy_pattern}, {"loss", greedy_loss}};
  }
  j["uniform"] = uniform ? UniformJson(*uniform) : json(nullptr);
  json ratios = json::array();
  for (const UniformPoint& u : uniform_ratios) ratios.push_back(UniformJson(u));
  j["uniform_ratios"] = ratios;
  j["start_pattern"] = start_pattern;
  j["layer_forwards"] = layer_forwards;
  j["naive_layer_forwards"] = naive_layer_forwards;
  j["config_keys"] = ConfigKeys(pattern);
  j["settings"] = settings;
  return j;
}

namespace {

// Checked accessors: every error names the file and the field.
struct Reader {
  const std::string& source;
  Status Field(const json& o, const char* key, json::value_t type, const json** out) const {
    if (!o.is_object() || !o.contains(key)) return InvalidArgument(source + ": missing field '" + key + "'");
    const json& v = o[key];
    const bool ok = type == json::value_t::number_float ? v.is_number()
                    : type == json::value_t::number_integer ? v.is_number_integer()
                                                            : v.type() == type;
    if (!ok) return InvalidArgument(source + ": field '" + key + "' has the wrong type");
    *out = &v;
    return Status::Ok();
  }
  StatusOr<double> Number(const json& o, const char* key) const {
    const json* v;
    RETURN_IF_ERROR(Field(o, key, json::value_t::number_float, &v));
    return v->get<double>();
  }
  StatusOr<int64_t> Int(const json& o, const char* key) const {
    const json* v;
    RETURN_IF_ERROR(Field(o, key, json::value_t::number_integer, &v));
    return v->get<int64_t>();
  }
  StatusOr<std::string> String(const json& o, const char* key) const {
    const json* v;
    RETURN_IF_ERROR(Field(o, key, json::value_t::string, &v));
    return v->get<std::string>();
  }
  StatusOr<UniformPoint> Uniform(const json& o) const {
    UniformPoint u;
    ASSIGN_OR_RETURN(u.ratio, String(o, "ratio"));
    if (o.contains("pattern") && o["pattern"].is_string()) {
      ASSIGN_OR_RETURN(u.pattern, String(o, "pattern"));
      ASSIGN_OR_RETURN(u.loss, Number(o, "loss"));
    }
    return u;
  }
};

}  // namespace

StatusOr<SearchRecord> SearchRecord::FromJson(const json& j, const std::string& source) {
  const Reader rd{source};
  SearchRecord r;
  if (!j.is_object() || !j.contains("settings") || !j["settings"].is_object()) {
    return InvalidArgument(source + ": missing object 'settings'");
  }
  r.settings = j["settings"];
  ASSIGN_OR_RETURN(r.start_pattern, rd.String(j, "start_pattern"));
  ASSIGN_OR_RETURN(r.baseline_loss, rd.Number(j, "baseline_loss"));
  ASSIGN_OR_RETURN(r.layer_forwards, rd.Int(j, "layer_forwards"));
  ASSIGN_OR_RETURN(r.naive_layer_forwards, rd.Int(j, "naive_layer_forwards"));
  const json* steps;
  RETURN_IF_ERROR(rd.Field(j, "steps", json::value_t::array, &steps));
  for (const json& s : *steps) {
    SearchStep step;
    ASSIGN_OR_RETURN(step.kind, rd.String(s, "kind"));
    if (step.kind == "greedy") {
      ASSIGN_OR_RETURN(int64_t layer, rd.Int(s, "layer"));
      step.layer = static_cast<int>(layer);
    } else if (step.kind == "refine") {
      ASSIGN_OR_RETURN(int64_t from, rd.Int(s, "from"));
      ASSIGN_OR_RETURN(int64_t to, rd.Int(s, "to"));
      step.from = static_cast<int>(from);
      step.to = static_cast<int>(to);
    } else {
      return InvalidArgument(source + ": field 'steps[].kind' must be \"greedy\" or \"refine\"");
    }
    ASSIGN_OR_RETURN(step.loss, rd.Number(s, "loss"));
    const json* cands;
    RETURN_IF_ERROR(rd.Field(s, "candidates", json::value_t::object, &cands));
    for (const auto& [key, value] : cands->items()) {
      if (!value.is_number()) return InvalidArgument(source + ": field 'candidates." + key + "' is not a number");
      step.candidates[key] = value.get<double>();
    }
    r.steps.push_back(std::move(step));
  }
  const json* ratios;
  RETURN_IF_ERROR(rd.Field(j, "uniform_ratios", json::value_t::array, &ratios));
  for (const json& u : *ratios) {
    ASSIGN_OR_RETURN(UniformPoint p, rd.Uniform(u));
    r.uniform_ratios.push_back(p);
  }
  if (j.contains("uniform") && j["uniform"].is_object()) {
    ASSIGN_OR_RETURN(UniformPoint p, rd.Uniform(j["uniform"]));
    r.uniform = p;
  }
  if (j.contains("greedy") && j["greedy"].is_object()) {
    ASSIGN_OR_RETURN(r.greedy_pattern, rd.String(j["greedy"], "pattern"));
    ASSIGN_OR_RETURN(r.greedy_loss, rd.Number(j["greedy"], "loss"));
  }
  const json* done;
  RETURN_IF_ERROR(rd.Field(j, "done", json::value_t::boolean, &done));
  r.done = done->get<bool>();
  auto current = r.CurrentPattern();
  if (!current.ok()) return InvalidArgument(source + ": " + current.status().message());
  return r;
}

StatusOr<SearchRecord> ReadSearchRecord(const std::string& path) {
  ASSIGN_OR_RETURN(std::string text, ReadFileToString(path));
  const json j = json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded()) return InvalidArgument(path + ": not valid JSON");
  return SearchRecord::FromJson(j, path);
}

Status WriteSearchRecord(const std::string& path, const SearchRecord& record) {
  return WriteFileAtomic(path, record.ToJson().dump(2) + "\n");
}

}  // namespace indexcache
