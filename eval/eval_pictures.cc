#include "eval/eval_pictures.h"

#include <cmath>
#include <limits>
#include <map>
#include <set>

#include "viz/svg_plot.h"

namespace indexcache {

namespace {

using json = nlohmann::json;

double Number(const json& v) { return v.is_number() ? v.get<double>() : std::numeric_limits<double>::quiet_NaN(); }

std::string DepthLabel(double d) {
  if (d < 0) return "-";
  char buf[32];
  std::snprintf(buf, sizeof(buf), "%.2g", d);
  return buf;
}

}  // namespace

StatusOr<std::vector<std::string>> WriteEvalPictures(const json& report, const std::string& json_path) {
  std::vector<std::string> written;
  if (report.contains("overlap") && report["overlap"].is_array()) {
    Heatmap map;
    map.title = "Top-k overlap under all-F";
    map.x_label = "layer";
    map.y_label = "layer";
    const json& m = report["overlap"];
    for (size_t i = 0; i < m.size(); ++i) {
      map.row_labels.push_back(std::to_string(i));
      map.col_labels.push_back(std::to_string(i));
      std::vector<double> row;
      for (const json& v : m[i]) row.push_back(Number(v));
      map.values.push_back(row);
    }
    map.annotate = m.size() <= 16;
    const std::string path = WithExtension(json_path, "_overlap.svg");
    RETURN_IF_ERROR(WriteSvg(path, RenderHeatmap(map)));
    written.push_back(path);
  }
  const json& patterns = report.contains("patterns") ? report["patterns"] : json::array();
  bool any_buckets = false;
  LinePlot plot;
  plot.title = "Loss by position";
  plot.x_label = "position (bucket middle)";
  plot.y_label = "loss (nats / token)";
  for (const json& p : patterns) {
    if (!p.contains("by_position")) continue;
    any_buckets = true;
    PlotSeries s;
    s.label = p.value("name", "") + " " + p.value("pattern", "");
    for (const json& b : p["by_position"]) {
      if (b.value("count", 0) == 0) continue;
      s.points.push_back({0.5 * (Number(b["begin"]) + Number(b["end"])), Number(b["loss"])});
    }
    plot.series.push_back(s);
  }
  if (any_buckets) {
    const std::string path = WithExtension(json_path, "_loss_by_position.svg");
    RETURN_IF_ERROR(WriteSvg(path, RenderLinePlot(plot)));
    written.push_back(path);
  }
  for (size_t i = 0; i < patterns.size(); ++i) {
    const json& p = patterns[i];
    if (!p.contains("tasks") || !p["tasks"].contains("by_kind")) continue;
    // Pool the kinds: exact matches and counts per (context, depth) cell.
    std::map<std::pair<int64_t, double>, std::pair<double, double>> cells;  // -> (exact, count)
    std::set<int64_t> contexts;
    std::set<double> depths;
    for (const auto& [kind, k] : p["tasks"]["by_kind"].items()) {
      for (const json& c : k["by_length_depth"]) {
        const int64_t ctx = c.value("context", int64_t{0});
        const double depth = c["depth"].is_number() ? c["depth"].get<double>() : -1.0;
        const double n = Number(c["count"]);
        cells[{ctx, depth}].first += Number(c["accuracy"]) * n;
        cells[{ctx, depth}].second += n;
        contexts.insert(ctx);
        depths.insert(depth);
      }
    }
    Heatmap map;
    map.title = "Retrieval accuracy, " + p.value("name", "") + " (" + p.value("pattern", "") + ")";
    map.x_label = "context length (tokens)";
    map.y_label = "needle depth";
    for (int64_t c : contexts) map.col_labels.push_back(std::to_string(c));
    for (double d : depths) {
      map.row_labels.push_back(DepthLabel(d));
      std::vector<double> row;
      for (int64_t c : contexts) {
        auto it = cells.find({c, d});
        row.push_back(it == cells.end() || it->second.second == 0 ? std::numeric_limits<double>::quiet_NaN()
                                                                   : it->second.first / it->second.second);
      }
      map.values.push_back(row);
    }
    map.annotate = true;
    const std::string path = WithExtension(json_path, "_tasks_p" + std::to_string(i) + ".svg");
    RETURN_IF_ERROR(WriteSvg(path, RenderHeatmap(map)));
    written.push_back(path);
  }
  return written;
}

}  // namespace indexcache
