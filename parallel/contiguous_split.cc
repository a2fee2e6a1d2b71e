#include "parallel/contiguous_split.h"

#include <algorithm>
#include <functional>
#include <limits>
#include <string>

namespace indexcache {

namespace {

constexpr int kMaxItems = 1024;
constexpr double kInfinity = std::numeric_limits<double>::infinity();

struct PrefixSums {
  std::vector<double> seconds;
  std::vector<int64_t> bytes;
  double Seconds(int first, int end) const { return seconds[end] - seconds[first]; }
  int64_t Bytes(int first, int end) const { return bytes[end] - bytes[first]; }
};

Status Validate(const SplitProblem& p, PrefixSums* sums) {
  const int n = static_cast<int>(p.items.size());
  if (n < 1 || n > kMaxItems) return InvalidArgument("stage split: " + std::to_string(n) + " items (1.." + std::to_string(kMaxItems) + ")");
  if (p.stages < 1 || p.stages > n) {
    return InvalidArgument("stage split: " + std::to_string(p.stages) + " stages for " + std::to_string(n) + " items");
  }
  if (!p.cut_allowed.empty() && static_cast<int>(p.cut_allowed.size()) != n) {
    return InvalidArgument("stage split: cut_allowed must have one entry per item");
  }
  sums->seconds.assign(n + 1, 0);
  sums->bytes.assign(n + 1, 0);
  for (int i = 0; i < n; ++i) {
    const SplitItem& item = p.items[i];
    if (!(item.seconds >= 0) || item.bytes < 0) return InvalidArgument("stage split: item " + std::to_string(i) + " has a negative cost");
    sums->seconds[i + 1] = sums->seconds[i] + item.seconds;
    if (__builtin_add_overflow(sums->bytes[i], item.bytes, &sums->bytes[i + 1])) {
      return InvalidArgument("stage split: total bytes overflow 64 bits");
    }
  }
  return Status::Ok();
}

bool CutAllowed(const SplitProblem& p, int i) { return i == 0 || p.cut_allowed.empty() || p.cut_allowed[i]; }

// Minimises the largest `value` of a stage over splits whose every stage passes `allowed`.
// Returns the optimum (infinity if none) and fills `starts`.
double MinimiseLargest(const SplitProblem& p, const std::function<double(int, int)>& value,
                       const std::function<bool(int, int)>& allowed, std::vector<int>* starts) {
  const int n = static_cast<int>(p.items.size()), stages = p.stages;
  // best[s][i]: the optimum for the first i items in s stages; from[s][i]: where the last begins.
  std::vector<std::vector<double>> best(stages + 1, std::vector<double>(n + 1, kInfinity));
  std::vector<std::vector<int>> from(stages + 1, std::vector<int>(n + 1, -1));
  best[0][0] = -kInfinity;
  for (int s = 1; s <= stages; ++s) {
    for (int end = s; end <= n - (stages - s); ++end) {
      for (int first = s - 1; first < end; ++first) {
        if (best[s - 1][first] == kInfinity || !CutAllowed(p, first) || !allowed(first, end)) continue;
        const double candidate = std::max(best[s - 1][first], value(first, end));
        if (candidate < best[s][end]) {
          best[s][end] = candidate;
          from[s][end] = first;
        }
      }
    }
  }
  if (best[stages][n] == kInfinity) return kInfinity;
  starts->assign(stages + 1, 0);
  (*starts)[stages] = n;
  for (int s = stages, end = n; s >= 1; --s) {
    end = from[s][end];
    (*starts)[s - 1] = end;
  }
  return best[stages][n];
}

}  // namespace

StatusOr<Split> BalancedSplit(const SplitProblem& p) {
  PrefixSums sums;
  RETURN_IF_ERROR(Validate(p, &sums));
  auto fits = [&](int first, int end) { return sums.Bytes(first, end) <= p.capacity_bytes; };
  auto seconds = [&](int first, int end) { return sums.Seconds(first, end); };
  auto bytes = [&](int first, int end) { return static_cast<double>(sums.Bytes(first, end)); };
  Split split;
  const double fastest = MinimiseLargest(p, seconds, fits, &split.starts);
  if (fastest == kInfinity) {
    const int64_t need = SmallestLargestStageBytes(p);
    if (need < 0) return InvalidArgument("stage split: no allowed cut positions give " + std::to_string(p.stages) + " stages");
    return InvalidArgument("stage split: the largest of " + std::to_string(p.stages) + " stages needs at least " +
                           std::to_string(need) + " bytes, capacity " + std::to_string(p.capacity_bytes));
  }
  // Among the fastest splits, the one with the smallest largest stage in bytes.
  const double tolerance = fastest * 1e-12 + 1e-300;
  auto fits_and_fast = [&](int first, int end) { return fits(first, end) && seconds(first, end) <= fastest + tolerance; };
  std::vector<int> starts;
  if (MinimiseLargest(p, bytes, fits_and_fast, &starts) != kInfinity) split.starts = starts;
  split.slowest_seconds = 0;
  split.largest_bytes = 0;
  for (int s = 0; s < p.stages; ++s) {
    split.slowest_seconds = std::max(split.slowest_seconds, sums.Seconds(split.starts[s], split.starts[s + 1]));
    split.largest_bytes = std::max(split.largest_bytes, sums.Bytes(split.starts[s], split.starts[s + 1]));
  }
  return split;
}

int64_t SmallestLargestStageBytes(const SplitProblem& p) {
  PrefixSums sums;
  if (!Validate(p, &sums).ok()) return -1;
  std::vector<int> starts;
  const double best = MinimiseLargest(
      p, [&](int first, int end) { return static_cast<double>(sums.Bytes(first, end)); },
      [](int, int) { return true; }, &starts);
  if (best == kInfinity) return -1;
  int64_t largest = 0;
  for (int s = 0; s < p.stages; ++s) largest = std::max(largest, sums.Bytes(starts[s], starts[s + 1]));
  return largest;
}

}  // namespace indexcache
