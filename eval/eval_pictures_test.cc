#include "eval/eval_pictures.h"

#include <gtest/gtest.h>

#include "core/file_util.h"
#include "core/test_util.h"

namespace indexcache {
namespace {

using json = nlohmann::json;

TEST(EvalPictures, WritesOnePictureForEachKindOfData) {
  const std::string dir = MakeTempDir();
  json cell = {{"context", 1024}, {"depth", 0.5}, {"count", 2}, {"accuracy", 0.5}, {"answer_loss", 1.0}};
  json no_depth = {{"context", 2048}, {"depth", nullptr}, {"count", 1}, {"accuracy", 1.0}, {"answer_loss", 0.1}};
  const json report = {
      {"overlap", {{1.0, 0.5}, {0.5, 1.0}}},
      {"patterns",
       {{{"name", "all"},
         {"pattern", "FF"},
         {"by_position", {{{"begin", 0}, {"end", 4}, {"count", 8}, {"loss", 2.0}},
                          {{"begin", 4}, {"end", 7}, {"count", 6}, {"loss", 1.5}}}},
         {"tasks", {{"accuracy", 0.66}, {"by_kind", {{"passkey", {{"by_length_depth", {cell, no_depth}}}}}}}}},
        {{"name", "1/2"}, {"pattern", "FS"}}}}};
  auto written = WriteEvalPictures(report, dir + "/eval.json");
  ASSERT_TRUE(written.ok()) << written.status().ToString();
  ASSERT_EQ(written->size(), 3u);
  EXPECT_EQ((*written)[0], dir + "/eval_overlap.svg");
  EXPECT_EQ((*written)[1], dir + "/eval_loss_by_position.svg");
  EXPECT_EQ((*written)[2], dir + "/eval_tasks_p0.svg");
  for (const std::string& p : *written) {
    const std::string svg = ReadBytes(p);
    EXPECT_EQ(svg.rfind("<svg", 0) == 0 || svg.find("<svg") != std::string::npos, true) << p;
  }
  EXPECT_NE(ReadBytes(dir + "/eval_tasks_p0.svg").find("2048"), std::string::npos);
  // A report without any of the three draws nothing.
  auto none = WriteEvalPictures(json{{"patterns", json::array()}}, dir + "/plain.json");
  ASSERT_TRUE(none.ok());
  EXPECT_TRUE(none->empty());
}

}  // namespace
}  // namespace indexcache
