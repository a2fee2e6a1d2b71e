// Small SVG charts for the pictures the tools write next to their JSON (search trajectories, loss
// by position, overlap and retrieval heatmaps). Plain SVG 1.1 text, viewable in a browser and in
// rendered Markdown; no dependency beyond the standard library.
#pragma once

#include <string>
#include <utility>
#include <vector>

#include "core/status.h"

namespace indexcache {

struct PlotSeries {
  std::string label;
  std::vector<std::pair<double, double>> points;  // (x, y); drawn in the order given
  bool line = true;       // join the points
  bool markers = true;    // a dot at each point
  std::string color;      // empty: the next colour of the palette
};

struct LinePlot {
  std::string title, x_label, y_label;
  std::vector<PlotSeries> series;
  int width = 720, height = 420;
};

struct Heatmap {
  std::string title, x_label, y_label;
  std::vector<std::string> row_labels, col_labels;  // rows top to bottom, columns left to right
  std::vector<std::vector<double>> values;          // [rows][cols]; NaN draws an empty cell
  double vmin = 0.0, vmax = 1.0;                    // the colour scale's ends
  bool annotate = false;                            // print each value in its cell
  int cell = 0;                                     // cell size in pixels; 0: fit ~560 px
};

std::string RenderLinePlot(const LinePlot& plot);
std::string RenderHeatmap(const Heatmap& map);

// Writes `svg` atomically to `path`.
Status WriteSvg(const std::string& path, const std::string& svg);

// "/a/b/search.json" -> "/a/b/search.svg" (any extension replaced; appended when there is none).
std::string WithExtension(const std::string& path, const std::string& ext);

}  // namespace indexcache
