// BalancedSplit: cut a sequence of items (embedding, layers, head) into a given number of
// contiguous, non-empty stages so that the slowest stage is as fast as possible, every stage's
// bytes stay within a capacity, and cuts fall only where allowed. Exact (dynamic programming over
// cut positions, O(stages x items^2)); among the fastest splits it picks the one whose largest
// stage in bytes is smallest. Pure; knows nothing about models.
#pragma once

#include <cstdint>
#include <vector>

#include "core/status.h"

namespace indexcache {

struct SplitItem {
  double seconds = 0;
  int64_t bytes = 0;
};

struct SplitProblem {
  std::vector<SplitItem> items;
  // cut_allowed[i]: a stage may begin at item i (i >= 1; entry 0 is ignored). Empty: anywhere.
  std::vector<bool> cut_allowed;
  int stages = 1;
  int64_t capacity_bytes = 0;  // per stage, for the sum of its items' bytes
};

// Stage s covers items [starts[s], starts[s + 1]) with starts[stages] = items.size().
struct Split {
  std::vector<int> starts;  // stages + 1 entries, starts[0] = 0
  double slowest_seconds = 0;
  int64_t largest_bytes = 0;
};

// Limits: at most 1024 items and stages <= items. Errors: no split fits (the message says how
// many bytes the best split's largest stage needs), or bad arguments.
StatusOr<Split> BalancedSplit(const SplitProblem& problem);

// The smallest possible largest-stage bytes over all allowed splits into `stages` stages,
// ignoring time and capacity (for error messages: what a GPU would need). -1 if no allowed split.
int64_t SmallestLargestStageBytes(const SplitProblem& problem);

}  // namespace indexcache
