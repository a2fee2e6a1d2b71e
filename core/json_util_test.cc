// Tests for core/json_util: no nlohmann exception escapes, fields are named, and bad values are
// echoed briefly (never a recursive dump of a deep structure).
#include "core/json_util.h"

#include "gtest/gtest.h"

namespace indexcache {
namespace {

using json = nlohmann::json;

TEST(JsonUtilTest, BriefDoesNotRecurseOrEchoLongValues) {
  EXPECT_EQ(JsonBrief(json(5)), "5");
  EXPECT_EQ(JsonBrief(json("abc")), "\"abc\"");
  EXPECT_EQ(JsonBrief(json::array({1, 2, 3})), "an array of 3 entries");
  EXPECT_EQ(JsonBrief(json::object({{"a", 1}})), "an object of 1 field");
  EXPECT_LT(JsonBrief(json(std::string(100000, 'x'))).size(), 60u);
  // Issue 12: a 300,000-deep array in an integer field overflowed the stack in dump().
  const std::string deep = std::string(300000, '[') + std::string(300000, ']');
  auto parsed = ParseJson("{\"n\": " + deep + "}", "config.json");
  ASSERT_TRUE(parsed.ok());
  JsonFields fields(*parsed, "config.json");
  auto n = fields.Int("n", 0, 10);
  ASSERT_FALSE(n.ok());
  EXPECT_EQ(n.status().message(), "config.json: field 'n' must be an integer in [0, 10], got an array of 1 entry");
}

TEST(JsonUtilTest, TypeErrorsAreStatusesNamingTheField) {
  // Issue 12: `quant_method: 5` escaped as nlohmann type_error.302.
  const json j = {{"quant_method", 5}, {"big", 18446744073709551615ull}, {"neg", -3}, {"f", 1.5}, {"s", "x"}};
  JsonFields q(j, "m/config.json", "quantization_config.");
  auto s = q.String("quant_method");
  ASSERT_FALSE(s.ok());
  EXPECT_EQ(s.status().message(), "m/config.json: field 'quantization_config.quant_method' must be a string, got 5");
  EXPECT_FALSE(q.Int("big", 0, 100).ok());  // not wrapped to -1
  EXPECT_FALSE(q.Int("neg", 0, 100).ok());
  EXPECT_FALSE(q.Int("f", 0, 100).ok());
  EXPECT_FALSE(q.Double("s").ok());
  EXPECT_FALSE(q.BoolOr("s", false).ok());
  EXPECT_EQ(*q.IntOr("absent", 7, 0, 10), 7);
  EXPECT_EQ(*q.StringOr("s", "d"), "x");
  // Not an object at all: every field is missing, nothing throws.
  JsonFields arr(json::array({1}), "x.json");
  EXPECT_FALSE(arr.Has("a"));
  EXPECT_FALSE(arr.Int("a", 0, 1).ok());
  EXPECT_FALSE(ParseJson("{", "x.json").ok());
}

}  // namespace
}  // namespace indexcache
