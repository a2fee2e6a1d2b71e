// Tests for IndexCache patterns (model/pattern.cc): command-line parsing, resolution from
// config.json keys (precedence indexer_types > index_topk_pattern > index_topk_freq/offset), the
// freq/offset rule, source_of / served_by, AsFrequency, and error messages that name their source.
#include "model/pattern.h"

#include "core/file_util.h"
#include "core/test_util.h"

#include <algorithm>
#include <set>
#include <string>
#include <vector>

#include "gtest/gtest.h"

namespace indexcache {
namespace {

using json = nlohmann::json;

const char kSrc[] = "ckpt/config.json";

// Full layers, as a string, of a pattern built independently from a set of Full layer ids.
std::string FromSet(int n, const std::set<int>& full) {
  std::string s;
  for (int l = 0; l < n; ++l) s.push_back(full.count(l) ? 'F' : 'S');
  return s;
}

void ExpectError(const StatusOr<IndexPattern>& r, const std::vector<std::string>& needles) {
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), StatusCode::kInvalidArgument);
  for (const std::string& n : needles) {
    EXPECT_NE(r.status().message().find(n), std::string::npos) << "'" << r.status().message() << "' lacks '" << n << "'";
  }
}

TEST(PatternTest, ParseLetters) {
  auto p = IndexPattern::Parse("FSSF", 4);
  ASSERT_TRUE(p.ok()) << p.status().ToString();
  EXPECT_EQ(p->ToString(), "FSSF");
  EXPECT_EQ(p->num_layers(), 4);
  EXPECT_EQ(p->num_full(), 2);
  EXPECT_TRUE(p->is_full(0));
  EXPECT_FALSE(p->is_full(1));
  EXPECT_FALSE(p->is_full(2));
  EXPECT_TRUE(p->is_full(3));
}

TEST(PatternTest, ParseRatioAndAll) {
  auto p = IndexPattern::Parse("1/4", 13);
  ASSERT_TRUE(p.ok());
  EXPECT_EQ(p->ToString(), FromSet(13, {0, 4, 8, 12}));
  auto one = IndexPattern::Parse("1/1", 5);
  ASSERT_TRUE(one.ok());
  EXPECT_EQ(one->ToString(), "FFFFF");
  auto big = IndexPattern::Parse("1/100", 5);
  ASSERT_TRUE(big.ok());
  EXPECT_EQ(big->ToString(), "FSSSS");
  auto all = IndexPattern::Parse("all", 7);
  ASSERT_TRUE(all.ok());
  EXPECT_EQ(all->ToString(), "FFFFFFF");
  EXPECT_EQ(*all, IndexPattern::AllFull(7));
}

TEST(PatternTest, ParseErrorsNameTheSource) {
  ExpectError(IndexPattern::Parse("FSS", 4), {"--pattern", "FSS", "3", "4"});
  ExpectError(IndexPattern::Parse("FSSFF", 4, "--my-flag"), {"--my-flag", "5"});
  ExpectError(IndexPattern::Parse("FSXF", 4), {"--pattern", "'X'", "layer 2"});
  ExpectError(IndexPattern::Parse("FsSF", 4), {"--pattern", "'s'"});
  ExpectError(IndexPattern::Parse("SFFF", 4), {"--pattern", "layer 0"});
  for (const char* bad : {"2/4", "1/0", "x/y", "1/", "/4", "1/-2", "0/3"}) {
    ExpectError(IndexPattern::Parse(bad, 8, "--ratio"), {"--ratio", bad});
  }
}

TEST(PatternTest, ParseSearchResultJson) {
  const std::string dir = MakeTempDir();
  ASSERT_TRUE(WriteFileAtomic(dir + "/search.json", R"({"pattern": "FSFS", "final_loss": 1.0})").ok());
  auto p = IndexPattern::Parse(dir + "/search.json", 4);
  ASSERT_TRUE(p.ok()) << p.status().message();
  EXPECT_EQ(p->ToString(), "FSFS");
  auto wrong_length = IndexPattern::Parse(dir + "/search.json", 5);
  ASSERT_FALSE(wrong_length.ok());
  EXPECT_NE(wrong_length.status().message().find("search.json"), std::string::npos);
  ASSERT_TRUE(WriteFileAtomic(dir + "/bad.json", R"({"layers": 3})").ok());
  auto bad = IndexPattern::Parse(dir + "/bad.json", 4);
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.status().message().find("string field 'pattern'"), std::string::npos) << bad.status().message();
  EXPECT_FALSE(IndexPattern::Parse(dir + "/missing.json", 4).ok());
}

TEST(PatternTest, FrequencyRule) {
  // Layer l is Shared iff max(l - offset + 1, 0) % freq != 0.
  // GLM-5.2: 78 layers, freq 4, offset 3 -> Full = {0, 1, 2} and l = 6, 10, ..., 74: 21 layers.
  std::set<int> glm = {0, 1, 2};
  for (int l = 6; l < 78; l += 4) glm.insert(l);
  const IndexPattern p = IndexPattern::FromFrequency(78, 4, 3);
  EXPECT_EQ(p.num_full(), 21);
  EXPECT_EQ(p.ToString(), FromSet(78, glm));
  // transformers' default offset 2: Full = {0, 1} and l = 5, 9, ..., 77.
  std::set<int> dflt = {0, 1};
  for (int l = 5; l < 78; l += 4) dflt.insert(l);
  auto from_config = IndexPattern::FromConfig(json{{"index_topk_freq", 4}}, 78, kSrc);
  ASSERT_TRUE(from_config.ok()) << from_config.status().ToString();
  EXPECT_EQ(from_config->ToString(), FromSet(78, dflt));
  auto glm_config = IndexPattern::FromConfig(json{{"index_topk_freq", 4}, {"index_skip_topk_offset", 3}}, 78, kSrc);
  ASSERT_TRUE(glm_config.ok());
  EXPECT_EQ(*glm_config, p);
  // freq 1: every layer Full.
  EXPECT_EQ(IndexPattern::FromFrequency(9, 1, 2).ToString(), "FFFFFFFFF");
}

TEST(PatternTest, FromConfigPrecedence) {
  const std::string by_types = "FSFSS", by_pattern = "FFSSF";
  json c = {
      {"indexer_types", {"full", "shared", "full", "shared", "shared"}},
      {"index_topk_pattern", by_pattern},
      {"index_topk_freq", 2},
      {"index_skip_topk_offset", 1},
  };
  auto p = IndexPattern::FromConfig(c, 5, kSrc);
  ASSERT_TRUE(p.ok());
  EXPECT_EQ(p->ToString(), by_types);
  c["indexer_types"] = nullptr;  // null means absent
  p = IndexPattern::FromConfig(c, 5, kSrc);
  ASSERT_TRUE(p.ok());
  EXPECT_EQ(p->ToString(), by_pattern);
  c.erase("index_topk_pattern");
  p = IndexPattern::FromConfig(c, 5, kSrc);
  ASSERT_TRUE(p.ok());
  EXPECT_EQ(p->ToString(), "FSFSF");  // freq 2, offset 1: l % 2 == 0
  c.erase("index_topk_freq");
  p = IndexPattern::FromConfig(c, 5, kSrc);
  ASSERT_TRUE(p.ok());
  EXPECT_EQ(p->ToString(), "FFFFF");
  // index_topk_pattern as a list of letters.
  p = IndexPattern::FromConfig(json{{"index_topk_pattern", {"F", "S", "S", "F"}}}, 4, kSrc);
  ASSERT_TRUE(p.ok());
  EXPECT_EQ(p->ToString(), "FSSF");
}

TEST(PatternTest, FromConfigErrorsNameFileAndField) {
  const auto err = [](const json& c, int n, const std::vector<std::string>& needles) {
    auto r = IndexPattern::FromConfig(c, n, kSrc);
    std::vector<std::string> all = needles;
    all.push_back(kSrc);
    ExpectError(r, all);
  };
  err({{"indexer_types", {"full", "shared"}}}, 3, {"indexer_types", "2", "3"});
  err({{"indexer_types", {"full", "half", "full"}}}, 3, {"indexer_types", "half"});
  err({{"indexer_types", {"shared", "full", "full"}}}, 3, {"indexer_types", "layer 0"});
  err({{"indexer_types", "FSF"}}, 3, {"indexer_types"});
  err({{"index_topk_pattern", "FSXF"}}, 4, {"index_topk_pattern", "'X'"});
  err({{"index_topk_pattern", "FSF"}}, 4, {"index_topk_pattern", "3", "4"});
  err({{"index_topk_pattern", "SFFF"}}, 4, {"index_topk_pattern", "layer 0"});
  err({{"index_topk_pattern", "1/2"}}, 4, {"index_topk_pattern"});
  err({{"index_topk_pattern", "all"}}, 4, {"index_topk_pattern"});
  err({{"index_topk_pattern", 7}}, 4, {"index_topk_pattern"});
  err({{"index_topk_pattern", {"F", "SS", "F"}}}, 4, {"index_topk_pattern"});
  err({{"index_topk_freq", 0}}, 4, {"index_topk_freq"});
  err({{"index_topk_freq", "4"}}, 4, {"index_topk_freq"});
  err({{"index_topk_freq", 2.5}}, 4, {"index_topk_freq"});
  err({{"index_topk_freq", 4}, {"index_skip_topk_offset", -1}}, 4, {"index_skip_topk_offset"});
  err({{"index_topk_freq", 2}, {"index_skip_topk_offset", 0}}, 4, {"index_topk_freq", "layer 0"});
}

TEST(PatternTest, SourceOfAndServedBy) {
  auto p = IndexPattern::Parse("FSSFFSFS", 8);
  ASSERT_TRUE(p.ok());
  const std::vector<int> source = {0, 0, 0, 3, 4, 4, 6, 6};
  for (int l = 0; l < 8; ++l) EXPECT_EQ(p->source_of(l), source[l]) << "layer " << l;
  EXPECT_EQ(p->served_by(0), (std::vector<int>{0, 1, 2}));
  EXPECT_EQ(p->served_by(3), (std::vector<int>{3}));
  EXPECT_EQ(p->served_by(4), (std::vector<int>{4, 5}));
  EXPECT_EQ(p->served_by(6), (std::vector<int>{6, 7}));
  // Every layer is served by exactly its source.
  for (int l = 0; l < 8; ++l) {
    const std::vector<int> s = p->served_by(p->source_of(l));
    EXPECT_EQ(std::count(s.begin(), s.end(), l), 1);
  }
}

TEST(PatternTest, AsFrequencyRoundTrip) {
  for (int n : {1, 5, 47, 78}) {
    for (int freq = 1; freq <= 6; ++freq) {
      for (int offset = 1; offset <= n; ++offset) {
        const IndexPattern p = IndexPattern::FromFrequency(n, freq, offset);
        int f = -1, o = -1;
        ASSERT_TRUE(p.AsFrequency(&f, &o)) << p.ToString();
        EXPECT_GE(f, 1);
        EXPECT_GE(o, 1) << "offset must lie in [1, layers]: " << p.ToString();
        EXPECT_LE(o, n);
        EXPECT_EQ(IndexPattern::FromFrequency(n, f, o), p) << "n=" << n << " freq=" << freq << " offset=" << offset;
        // The smallest offset that fits, for the freq returned.
        for (int smaller = 1; smaller < o; ++smaller) EXPECT_FALSE(IndexPattern::FromFrequency(n, f, smaller) == p);
      }
    }
  }
  int f = 0, o = 0;
  ASSERT_TRUE(IndexPattern::FromFrequency(78, 4, 3).AsFrequency(&f, &o));
  EXPECT_EQ(f, 4);
  EXPECT_EQ(o, 3);
  // The paper's searched 47-layer pattern is no freq/offset rule.
  auto searched = IndexPattern::Parse("FSFSFSSSSFSSSFSSFFSSFSSFSSSSFSSSFSSSSFSSSSSSSSS", 47);
  ASSERT_TRUE(searched.ok());
  EXPECT_FALSE(searched->AsFrequency(&f, &o));
}

}  // namespace
}  // namespace indexcache
