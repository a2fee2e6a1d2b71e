// The SVG writer: points land where the axes say (a point at the data's min/max sits on the plot
// box's edges), text is escaped, one element per data point/cell, colours follow the value.
#include "viz/svg_plot.h"

#include <cmath>
#include <regex>
#include <string>

#include "gtest/gtest.h"

namespace indexcache {
namespace {

int Count(const std::string& s, const std::string& needle) {
  int n = 0;
  for (size_t p = s.find(needle); p != std::string::npos; p = s.find(needle, p + 1)) ++n;
  return n;
}

TEST(SvgPlot, LinePlotPlacesPointsAndEscapesText) {
  LinePlot plot;
  plot.title = "loss <greedy & uniform>";
  plot.series.push_back({"greedy", {{0, 2.0}, {1, 2.5}, {2, 3.0}}});
  plot.series.push_back({"uniform", {{1, 2.75}}, /*line=*/false});
  const std::string svg = RenderLinePlot(plot);
  EXPECT_EQ(svg.rfind("<svg", 0), 0u);
  EXPECT_NE(svg.find("</svg>"), std::string::npos);
  EXPECT_NE(svg.find("loss &lt;greedy &amp; uniform&gt;"), std::string::npos);
  EXPECT_EQ(Count(svg, "<circle"), 4);
  EXPECT_EQ(Count(svg, "<path"), 1);  // the uniform series has no line
  // x = 0 is the left edge of the plot box (left margin 70), x = 2 the right edge (720 - 170).
  EXPECT_NE(svg.find("<circle cx=\"70.00\""), std::string::npos) << svg;
  EXPECT_NE(svg.find("<circle cx=\"550.00\""), std::string::npos) << svg;
}

TEST(SvgPlot, HeatmapShadesByValue) {
  Heatmap map;
  map.values = {{0.0, 1.0}, {std::nan(""), 0.5}};
  map.row_labels = {"a", "b"};
  map.col_labels = {"x", "y"};
  const std::string svg = RenderHeatmap(map);
  EXPECT_NE(svg.find("fill=\"#f7fbff\""), std::string::npos);  // vmin: the light end
  EXPECT_NE(svg.find("fill=\"#08306b\""), std::string::npos);  // vmax: the dark end
  EXPECT_NE(svg.find("fill=\"#ffffff\" stroke"), std::string::npos);  // NaN: empty
  EXPECT_NE(svg.find("<title>a / y: 1.000</title>"), std::string::npos);
}

TEST(SvgPlot, WithExtension) {
  EXPECT_EQ(WithExtension("/a/b/search.json", ".svg"), "/a/b/search.svg");
  EXPECT_EQ(WithExtension("/a.b/search", ".svg"), "/a.b/search.svg");
  EXPECT_EQ(WithExtension("out", ".svg"), "out.svg");
}

}  // namespace
}  // namespace indexcache
