#include "search/search_picture.h"

#include <algorithm>

#include "viz/svg_plot.h"

namespace indexcache {

std::string RenderSearchPicture(const SearchRecord& record, const std::string& title) {
  auto shared = [](const std::string& p) { return static_cast<double>(std::count(p.begin(), p.end(), 'S')); };
  PlotSeries greedy{"greedy"}, refined{"refined", {}, /*line=*/false}, uniform{"uniform", {}, /*line=*/false};
  double s = shared(record.start_pattern);
  greedy.points.emplace_back(s, record.baseline_loss);
  for (const SearchStep& step : record.steps) {
    if (step.kind == "greedy") {
      greedy.points.emplace_back(++s, step.loss);
    } else {
      refined.points.emplace_back(s, step.loss);
    }
  }
  if (!refined.points.empty()) refined.points = {refined.points.back()};
  for (const UniformPoint& u : record.uniform_ratios) {
    if (!u.pattern.empty()) uniform.points.emplace_back(shared(u.pattern), u.loss);
  }
  if (record.uniform && !record.uniform->pattern.empty()) {
    uniform.points.emplace_back(shared(record.uniform->pattern), record.uniform->loss);
  }
  std::sort(uniform.points.begin(), uniform.points.end());
  uniform.points.erase(std::unique(uniform.points.begin(), uniform.points.end()), uniform.points.end());
  uniform.line = true;
  LinePlot plot;
  plot.title = title;
  plot.x_label = "Shared layers (reusing the previous Full layer's top-k)";
  plot.y_label = "calibration loss (nats/token)";
  plot.series = {greedy, uniform};
  if (!refined.points.empty()) plot.series.push_back(refined);
  return RenderLinePlot(plot);
}

}  // namespace indexcache
