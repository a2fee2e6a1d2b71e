// Learning-rate schedules for the indexer trainer, as a small value type.
//
//   constant         lr(step) = peak_lr
//   warmup_constant  lr(step) = peak_lr * step / warmup_steps   for step < warmup_steps
//                             = peak_lr                          after
//   warmup_cosine    lr(step) = peak_lr * step / warmup_steps   for step < warmup_steps
//                             = min_lr + (peak_lr - min_lr) * (1 + cos(pi * p)) / 2,
//                                 p = (step - warmup_steps) / (total_steps - warmup_steps),
//                                                               for warmup_steps <= step < total_steps
//                             = min_lr                           for step >= total_steps
//
// Steps count from 0 (the first optimiser step is step 0), and the warmup follows transformers'
// get_*_schedule_with_warmup: step 0 has lr 0, step warmup_steps is the first at peak_lr. The
// cosine phase is transformers' get_cosine_with_min_lr_schedule_with_warmup with one half cycle.
#pragma once

#include <cstdint>
#include <string>

#include "core/status.h"

namespace indexcache {

enum class ScheduleKind { kConstant, kWarmupConstant, kWarmupCosine };

// "constant", "warmup_constant", "warmup_cosine".
const char* ScheduleKindName(ScheduleKind kind);
StatusOr<ScheduleKind> ParseScheduleKind(const std::string& name);

struct LrSchedule {
  ScheduleKind kind = ScheduleKind::kConstant;
  double peak_lr = 0.0;
  double min_lr = 0.0;        // warmup_cosine only: the floor reached at total_steps
  int64_t warmup_steps = 0;   // must be 0 for constant
  int64_t total_steps = 0;    // required (> 0) for warmup_cosine; 0 elsewhere means "unbounded"

  // A validated schedule; `kind` by name. Errors name the field at fault.
  static StatusOr<LrSchedule> Create(const std::string& kind, double peak_lr, int64_t warmup_steps = 0,
                                     int64_t total_steps = 0, double min_lr = 0.0);

  // Rates must be finite and non-negative, min_lr <= peak_lr, steps non-negative, warmup_steps <=
  // total_steps where total_steps is given.
  Status Validate() const;

  // The learning rate of optimiser step `step` (0-based; negative steps count as 0). Assumes a
  // valid schedule.
  double LearningRate(int64_t step) const;

  // "warmup_cosine(peak_lr=0.001, min_lr=1e-05, warmup_steps=100, total_steps=1000)".
  std::string ToString() const;
};

}  // namespace indexcache
