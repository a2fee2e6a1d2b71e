#include "eval/retrieval_tasks.h"

#include <sys/stat.h>

#include <algorithm>
#include <sstream>

#include "core/file_util.h"

namespace indexcache {

namespace {

using json = nlohmann::json;

StatusOr<std::vector<int32_t>> ReadIds(const json& j, const char* field, int64_t vocab, int64_t max_len,
                                       const std::string& where) {
  if (!j.contains(field)) return InvalidArgument(where + ": field '" + field + "' is missing");
  const json& a = j[field];
  if (!a.is_array() || a.empty()) return InvalidArgument(where + ": field '" + field + "' must be a non-empty list of token ids");
  if (static_cast<int64_t>(a.size()) > max_len) {
    return InvalidArgument(where + ": field '" + field + "' has " + std::to_string(a.size()) + " ids, at most " +
                           std::to_string(max_len));
  }
  std::vector<int32_t> ids;
  ids.reserve(a.size());
  for (size_t i = 0; i < a.size(); ++i) {
    if (!a[i].is_number_integer() || a[i].get<int64_t>() < 0 || a[i].get<int64_t>() >= vocab) {
      return InvalidArgument(where + ": field '" + field + "'[" + std::to_string(i) + "] is not a token id in [0, " +
                             std::to_string(vocab) + ")");
    }
    ids.push_back(static_cast<int32_t>(a[i].get<int64_t>()));
  }
  return ids;
}

}  // namespace

StatusOr<std::vector<RetrievalTask>> ReadTasks(const std::string& path, int64_t vocab_size, int64_t max_tokens) {
  struct stat st;
  if (::stat(path.c_str(), &st) != 0) return NotFound(path + ": cannot open the task file");
  if (st.st_size > kMaxTaskFileBytes) return InvalidArgument(path + ": task file larger than 2 GiB");
  ASSIGN_OR_RETURN(std::string text, ReadFileToString(path));
  std::vector<RetrievalTask> tasks;
  std::istringstream in(text);
  std::string line;
  int64_t number = 0;
  while (std::getline(in, line)) {
    ++number;
    if (line.find_first_not_of(" \t\r") == std::string::npos) continue;  // blank lines are allowed
    const std::string where = path + ": line " + std::to_string(number);
    if (static_cast<int64_t>(tasks.size()) >= kMaxTasks) {
      return InvalidArgument(where + ": more than " + std::to_string(kMaxTasks) + " tasks");
    }
    const json j = json::parse(line, nullptr, false);
    if (j.is_discarded() || !j.is_object()) return InvalidArgument(where + ": not a JSON object");
    RetrievalTask t;
    t.line = number;
    ASSIGN_OR_RETURN(t.prompt, ReadIds(j, "prompt", vocab_size, max_tokens - 1, where));
    ASSIGN_OR_RETURN(t.answer, ReadIds(j, "answer", vocab_size, kMaxAnswerTokens, where));
    if (static_cast<int64_t>(t.prompt.size() + t.answer.size()) > max_tokens) {
      return InvalidArgument(where + ": prompt + answer have " + std::to_string(t.prompt.size() + t.answer.size()) +
                             " tokens, at most " + std::to_string(max_tokens));
    }
    if (j.contains("kind")) {
      if (!j["kind"].is_string() || j["kind"].get<std::string>().empty() || j["kind"].get<std::string>().size() > 64) {
        return InvalidArgument(where + ": field 'kind' must be a string of 1 to 64 characters");
      }
      t.kind = j["kind"].get<std::string>();
    }
    t.context = static_cast<int64_t>(t.prompt.size());
    if (j.contains("context")) {
      if (!j["context"].is_number_integer() || j["context"].get<int64_t>() < 1 ||
          j["context"].get<int64_t>() > max_tokens) {
        return InvalidArgument(where + ": field 'context' must be an integer in [1, " + std::to_string(max_tokens) + "]");
      }
      t.context = j["context"].get<int64_t>();
    }
    if (j.contains("depth") && !j["depth"].is_null()) {
      if (!j["depth"].is_number() || j["depth"].get<double>() < 0.0 || j["depth"].get<double>() > 1.0) {
        return InvalidArgument(where + ": field 'depth' must be a number in [0, 1]");
      }
      t.depth = j["depth"].get<double>();
    }
    tasks.push_back(std::move(t));
  }
  if (tasks.empty()) return InvalidArgument(path + ": no tasks");
  return tasks;
}

StatusOr<TaskScore> ScoreTask(const DsaModel& model, const IndexPattern& pattern, const RetrievalTask& task) {
  const int64_t P = static_cast<int64_t>(task.prompt.size()), A = static_cast<int64_t>(task.answer.size());
  const int64_t V = model.config().vocab_size;
  TaskScore score;
  // Exact match: greedy decoding through the decode cache, stopping at the first wrong token.
  ASSIGN_OR_RETURN(KvCache cache, model.NewCache(P + A, &pattern));
  ForwardOptions step;
  step.cache = &cache;
  step.logits_last_row_only = true;
  ASSIGN_OR_RETURN(ForwardResult r, model.Forward(task.prompt, step));
  score.exact = true;
  for (int64_t i = 0; i < A; ++i) {
    const float* last = r.logits.data<float>();
    const int32_t next = static_cast<int32_t>(std::max_element(last, last + V) - last);
    if (next != task.answer[i]) {
      score.exact = false;
      break;
    }
    if (i + 1 < A) {
      ASSIGN_OR_RETURN(r, model.Forward({next}, step));
    }
  }
  // Answer loss: one teacher-forced forward over prompt + answer; position P - 1 + i predicts
  // answer[i].
  std::vector<int32_t> full = task.prompt;
  full.insert(full.end(), task.answer.begin(), task.answer.end());
  ForwardOptions tf;
  tf.pattern = &pattern;
  tf.compute_logits = false;
  tf.compute_loss = true;
  ASSIGN_OR_RETURN(ForwardResult lr, model.Forward(full, tf));
  for (int64_t i = 0; i < A; ++i) score.answer_nll += lr.token_nll[P - 1 + i];
  score.answer_tokens = A;
  return score;
}

void TaskReport::Cell::Add(const TaskScore& s) {
  ++count;
  exact += s.exact ? 1 : 0;
  answer_tokens += s.answer_tokens;
  answer_nll += s.answer_nll;
}

nlohmann::json TaskReport::Cell::ToJson() const {
  return {{"count", count},
          {"accuracy", count ? static_cast<double>(exact) / count : 0.0},
          {"answer_loss", answer_tokens ? answer_nll / answer_tokens : 0.0}};
}

void TaskReport::Add(const RetrievalTask& task, const TaskScore& score) {
  const std::pair<int64_t, double> key{task.context, std::isnan(task.depth) ? -1.0 : task.depth};
  all_.Add(score);
  by_kind_[task.kind].Add(score);
  by_cell_[task.kind][key].Add(score);
  cells_[key].Add(score);
}

nlohmann::json TaskReport::ToJson() const {
  json out = all_.ToJson();
  json kinds = json::object();
  for (const auto& [kind, cell] : by_kind_) {
    json k = cell.ToJson();
    json grid = json::array();
    for (const auto& [key, c] : by_cell_.at(kind)) {
      json g = {{"context", key.first}, {"depth", key.second < 0 ? json(nullptr) : json(key.second)}};
      g.update(c.ToJson());
      grid.push_back(g);
    }
    k["by_length_depth"] = grid;
    kinds[kind] = k;
  }
  out["by_kind"] = kinds;
  return out;
}

std::map<std::pair<int64_t, double>, double> TaskReport::AccuracyByLengthDepth() const {
  std::map<std::pair<int64_t, double>, double> out;
  for (const auto& [key, c] : cells_) out[key] = c.count ? static_cast<double>(c.exact) / c.count : 0.0;
  return out;
}

}  // namespace indexcache
