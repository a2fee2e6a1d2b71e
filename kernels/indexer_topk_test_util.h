// The per-row comparison of a GPU top-k with the CPU reference, shared by the indexer kernel tests
// (kernels/indexer_topk_cuda_test.cc: bf16; kernels/indexer_topk_fp8_cuda_test.cc: FP8). The GPU
// sums its dot products in another order than the reference, so its scores differ by rounding and
// its selection may differ at near-ties; top-k outputs are therefore compared as sets, with a
// tolerance at the threshold:
//   tol(v) = rel_tol * max(|v|, floor * max |row score|)
// and per row
//  - padding (-1 index, -inf score) exactly where the reference pads;
//  - no duplicate indices, every index a valid key;
//  - every returned score within tol of the reference score of that key;
//  - every selected key's reference score >= (reference k-th score - tol);
//  - where the reference's k-th and (k+1)-th scores differ by more than 2 tol, equal sets;
//  - output ordered by (returned score desc, index asc).
// The first check that fails ends its row (one failure per row). Callers add their tie-break rule
// through `extra_row_check`.
#pragma once

#include <cstdint>
#include <functional>
#include <set>
#include <string>

namespace indexcache {

// The bf16 path's score tolerance (fp32 accumulation of bf16 products) and the FP8 path's (Hopper
// keeps about 14 bits while accumulating e4m3 products).
constexpr float kTopkScoreRelTolBf16 = 1e-4f;
constexpr float kTopkScoreRelTolFp8 = 2e-3f;

struct TopkCheck {
  std::string name;                      // printed with every failure
  int64_t T = 0, L = 0, topk = 0;
  const float* ref_rows = nullptr;       // [T, L] reference scores, non-finite = invalid key
  const int32_t* ref_idx = nullptr;      // [T, topk] the reference top-k
  const float* ref_scores = nullptr;     // [T, topk]
  const int32_t* got_idx = nullptr;      // [T, topk] the output under test
  const float* got_scores = nullptr;     // [T, topk]
  float rel_tol = kTopkScoreRelTolBf16;
  float floor = 1e-2f;                   // of the row's largest |score|
  int max_failed_rows = 5;               // stop after this many failing rows
  // Called for each row that passed the checks above, with the row, its selected set and the
  // number of valid selections; `fail(what, j)` records a failure at output position j.
  std::function<void(int64_t t, const std::set<int32_t>& selected, int64_t kk,
                     const std::function<void(const std::string&, int64_t)>& fail)>
      extra_row_check;
};

struct TopkCheckResult {
  int failed_rows = 0;
  int64_t choice_rows = 0;  // rows with more valid keys than topk (a real choice)
  int64_t strict_rows = 0;  // of those, rows whose k-th gap was clear, so the sets were compared
  double max_rel = 0.0;     // largest |score - ref| / max(|ref|, floor * row max)
};

// Runs the checks; every failure is a gtest failure (ADD_FAILURE) naming the row and position.
TopkCheckResult CheckTopkRows(const TopkCheck& check);

}  // namespace indexcache
