#include "trainer/resume.h"

#include <cmath>
#include <map>

#include "core/file_util.h"
#include "core/json_util.h"

namespace indexcache {

namespace {

// A metadata value that must be this integer; errors name the file.
Status CheckMetadataInt(const SafetensorsFile& file, const std::string& key, int64_t expected,
                        const std::string& state_path) {
  const auto& meta = file.metadata();
  const auto it = meta.find(key);
  if (it == meta.end()) return DataLoss(file.path() + ": metadata has no '" + key + "'");
  if (it->second != std::to_string(expected)) {
    return DataLoss(file.path() + ": metadata '" + key + "' is '" + it->second.substr(0, 24) + "' but " + state_path +
                    " says " + std::to_string(expected) + " (parts of different saves)");
  }
  return Status::Ok();
}

bool AllFinite(const Tensor& t) {
  const float* p = t.data<float>();
  for (int64_t i = 0, n = t.numel(); i < n; ++i) {
    if (!std::isfinite(p[i])) return false;
  }
  return true;
}

}  // namespace

StatusOr<ResumePoint> ReadResumePoint(const CheckpointInfo& ck, const ResumeExpectations& expect) {
  ResumePoint point;
  point.path = ck.path;
  const std::string state_path = JoinPath(ck.path, kCheckpointStateFile);

  // --- trainer_state.json ---------------------------------------------------------------------
  ASSIGN_OR_RETURN(const nlohmann::json state, ReadCheckpointJson(ck.path, kCheckpointStateFile));
  if (!state.is_object()) return DataLoss(state_path + ": not a JSON object");
  const JsonFields f(state, state_path);
  ASSIGN_OR_RETURN(point.step, f.Int("step", 0, expect.total_steps));
  if (point.step != ck.step) {
    return DataLoss(state_path + ": field 'step' is " + std::to_string(point.step) + " but the directory is " +
                    CheckpointDirName(ck.step));
  }
  ASSIGN_OR_RETURN(point.adamw_step, f.Int("adamw_step", 0, point.step));
  ASSIGN_OR_RETURN(point.nonfinite_in_row, f.IntOr("nonfinite_in_row", 0, 0, point.step));
  ASSIGN_OR_RETURN(const std::string pattern, f.StringOr("pattern", expect.pattern));
  if (pattern != expect.pattern) {
    return InvalidArgument(state_path + ": field 'pattern' is '" + pattern.substr(0, 80) + "' but this run trains '" +
                           expect.pattern + "'");
  }
  const nlohmann::json* cursor = f.Find("cursor");
  if (!cursor) return DataLoss(state_path + ": field 'cursor' is missing");
  point.cursor = *cursor;

  // --- weights: exact names, shapes and dtypes, finite, same save ------------------------------
  ASSIGN_OR_RETURN(auto weights, SafetensorsFile::Open(JoinPath(ck.path, kCheckpointWeightsFile)));
  RETURN_IF_ERROR(CheckMetadataInt(*weights, "step", point.step, state_path));
  std::map<std::string, const Shape*> expected;
  for (const auto& [name, shape] : expect.params) expected[name] = &shape;
  for (const std::string& name : weights->names()) {
    if (!expected.count(name)) return DataLoss(weights->path() + ": unexpected tensor '" + name + "'");
  }
  for (const auto& [name, shape] : expect.params) {
    if (!weights->Has(name)) return NotFound(weights->path() + ": missing tensor '" + name + "'");
    ASSIGN_OR_RETURN(Tensor t, weights->Get(name));
    if (t.dtype() != DType::kF32 || t.shape() != shape) {
      return DataLoss(weights->path() + ": tensor '" + name + "' is " + DTypeName(t.dtype()) + " " +
                      ShapeToString(t.shape()) + ", expected F32 " + ShapeToString(shape));
    }
    if (!AllFinite(t)) return DataLoss(weights->path() + ": tensor '" + name + "' holds NaN or Inf");
    point.weights.emplace_back(name, std::move(t));
  }

  // --- optimizer: from the same save (its tensors are checked when it loads) --------------------
  ASSIGN_OR_RETURN(auto optimizer, SafetensorsFile::Open(JoinPath(ck.path, kCheckpointOptimizerFile)));
  RETURN_IF_ERROR(CheckMetadataInt(*optimizer, "step", point.step, state_path));
  RETURN_IF_ERROR(CheckMetadataInt(*optimizer, "adamw.step", point.adamw_step, state_path));
  return point;
}

StatusOr<std::optional<ResumePoint>> FindResumePoint(const std::string& dir, const ResumeExpectations& expect,
                                                     const std::function<Status(const ResumePoint&)>& apply,
                                                     std::vector<std::string>* warnings) {
  ASSIGN_OR_RETURN(const std::vector<CheckpointInfo> all, ListCheckpoints(dir));
  if (all.empty()) return std::optional<ResumePoint>();
  Status newest_error;
  for (auto it = all.rbegin(); it != all.rend(); ++it) {
    StatusOr<ResumePoint> point = ReadResumePoint(*it, expect);
    Status status = point.ok() ? apply(*point) : point.status();
    if (status.ok()) return std::optional<ResumePoint>(std::move(*point));
    if (newest_error.ok()) newest_error = status;
    if (warnings) warnings->push_back("skipping checkpoint " + it->path + ": " + status.message());
  }
  return Status(newest_error.code(), "no usable checkpoint in " + dir + "; the newest: " + newest_error.message());
}

}  // namespace indexcache
