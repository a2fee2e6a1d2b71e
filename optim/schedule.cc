#include "optim/schedule.h"

#include <cmath>
#include <cstdio>

namespace indexcache {

const char* ScheduleKindName(ScheduleKind kind) {
  switch (kind) {
    case ScheduleKind::kConstant: return "constant";
    case ScheduleKind::kWarmupConstant: return "warmup_constant";
    case ScheduleKind::kWarmupCosine: return "warmup_cosine";
  }
  return "unknown";
}

StatusOr<ScheduleKind> ParseScheduleKind(const std::string& name) {
  for (ScheduleKind kind : {ScheduleKind::kConstant, ScheduleKind::kWarmupConstant, ScheduleKind::kWarmupCosine}) {
    if (name == ScheduleKindName(kind)) return kind;
  }
  return InvalidArgument("lr schedule: unknown kind '" + name +
                         "' (expected constant, warmup_constant or warmup_cosine)");
}

StatusOr<LrSchedule> LrSchedule::Create(const std::string& kind, double peak_lr, int64_t warmup_steps,
                                        int64_t total_steps, double min_lr) {
  LrSchedule s;
  ASSIGN_OR_RETURN(s.kind, ParseScheduleKind(kind));
  s.peak_lr = peak_lr;
  s.min_lr = min_lr;
  s.warmup_steps = warmup_steps;
  s.total_steps = total_steps;
  RETURN_IF_ERROR(s.Validate());
  return s;
}

Status LrSchedule::Validate() const {
  const std::string where = std::string("lr schedule ") + ScheduleKindName(kind) + ": ";
  if (!std::isfinite(peak_lr) || peak_lr < 0) {
    return InvalidArgument(where + "peak_lr must be finite and non-negative, got " + std::to_string(peak_lr));
  }
  if (!std::isfinite(min_lr) || min_lr < 0) {
    return InvalidArgument(where + "min_lr must be finite and non-negative, got " + std::to_string(min_lr));
  }
  if (warmup_steps < 0) {
    return InvalidArgument(where + "warmup_steps must be non-negative, got " + std::to_string(warmup_steps));
  }
  if (total_steps < 0) {
    return InvalidArgument(where + "total_steps must be non-negative, got " + std::to_string(total_steps));
  }
  switch (kind) {
    case ScheduleKind::kConstant:
      if (warmup_steps != 0) {
        return InvalidArgument(where + "warmup_steps must be 0 (use warmup_constant), got " +
                               std::to_string(warmup_steps));
      }
      break;
    case ScheduleKind::kWarmupConstant:
      break;
    case ScheduleKind::kWarmupCosine:
      if (total_steps <= 0) return InvalidArgument(where + "total_steps must be positive");
      if (min_lr > peak_lr) {
        return InvalidArgument(where + "min_lr (" + std::to_string(min_lr) + ") exceeds peak_lr (" +
                               std::to_string(peak_lr) + ")");
      }
      break;
  }
  if (total_steps > 0 && warmup_steps > total_steps) {
    return InvalidArgument(where + "warmup_steps (" + std::to_string(warmup_steps) + ") exceeds total_steps (" +
                           std::to_string(total_steps) + ")");
  }
  return Status::Ok();
}

double LrSchedule::LearningRate(int64_t step) const {
  if (step < 0) step = 0;
  if (kind == ScheduleKind::kConstant) return peak_lr;
  if (step < warmup_steps) return peak_lr * static_cast<double>(step) / static_cast<double>(warmup_steps);
  if (kind == ScheduleKind::kWarmupConstant) return peak_lr;
  // Warmup-cosine.
  if (step >= total_steps) return min_lr;
  const double progress =
      static_cast<double>(step - warmup_steps) / static_cast<double>(total_steps - warmup_steps);
  return min_lr + (peak_lr - min_lr) * 0.5 * (1.0 + std::cos(M_PI * progress));
}

std::string LrSchedule::ToString() const {
  char buf[256];
  std::snprintf(buf, sizeof(buf), "%s(peak_lr=%g, min_lr=%g, warmup_steps=%lld, total_steps=%lld)",
                ScheduleKindName(kind), peak_lr, min_lr, static_cast<long long>(warmup_steps),
                static_cast<long long>(total_steps));
  return buf;
}

}  // namespace indexcache
