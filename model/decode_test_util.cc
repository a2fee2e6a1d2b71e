#include "model/decode_test_util.h"

#include <gtest/gtest.h>

namespace indexcache {

std::vector<int32_t> DecodeTestTokens(int r, int64_t n, int64_t vocab) {
  std::vector<int32_t> t(n);
  for (int64_t i = 0; i < n; ++i) t[i] = static_cast<int32_t>((i * 37 + r * 101 + 5 + (i * i) % 13) % vocab);
  return t;
}

std::vector<std::vector<float>> DecodeAlone(const DsaModel& model, const IndexPattern* pattern,
                                            const std::vector<int32_t>& prompt, const std::vector<int32_t>& steps) {
  auto cache = model.NewCache(static_cast<int64_t>(prompt.size() + steps.size()), pattern);
  EXPECT_TRUE(cache.ok()) << cache.status().ToString();
  std::vector<std::vector<float>> out;
  if (!cache.ok()) return out;
  ForwardOptions opts;
  opts.cache = &*cache;
  if (!prompt.empty()) {
    EXPECT_TRUE(model.Forward(prompt, opts).ok());
  }
  for (int32_t t : steps) {
    auto r = model.Forward({t}, opts);
    EXPECT_TRUE(r.ok()) << r.status().ToString();
    if (!r.ok()) return out;
    out.emplace_back(r->logits.data<float>(), r->logits.data<float>() + r->logits.numel());
  }
  return out;
}

}  // namespace indexcache
