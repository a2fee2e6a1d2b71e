#include "viz/svg_plot.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <limits>

#include "core/file_util.h"

namespace indexcache {

namespace {

const char* const kPalette[] = {"#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf"};

std::string Escape(const std::string& s) {
  std::string out;
  for (char c : s) {
    switch (c) {
      case '<': out += "&lt;"; break;
      case '>': out += "&gt;"; break;
      case '&': out += "&amp;"; break;
      case '"': out += "&quot;"; break;
      default: out += c;
    }
  }
  return out;
}

std::string Num(double v, int precision = 2) {
  char buf[64];
  std::snprintf(buf, sizeof(buf), "%.*f", precision, v);
  return buf;
}

// A tick label: as few digits as the tick step needs.
std::string TickLabel(double v, double step) {
  const int digits = std::max(0, static_cast<int>(-std::floor(std::log10(step) + 1e-9)));
  return Num(v, std::min(digits, 6));
}

// 1, 2 or 5 times a power of ten, giving about `target` ticks over [lo, hi].
double NiceStep(double lo, double hi, int target) {
  const double raw = (hi - lo) / std::max(1, target);
  if (!(raw > 0)) return 1.0;
  const double p = std::pow(10.0, std::floor(std::log10(raw)));
  for (double m : {1.0, 2.0, 5.0, 10.0}) {
    if (m * p >= raw) return m * p;
  }
  return 10 * p;
}

std::string Text(double x, double y, const std::string& s, const char* anchor = "middle", int size = 12,
                 const char* extra = "") {
  return "<text x=\"" + Num(x, 1) + "\" y=\"" + Num(y, 1) + "\" font-size=\"" + std::to_string(size) +
         "\" text-anchor=\"" + anchor + "\" " + extra + ">" + Escape(s) + "</text>\n";
}

std::string Header(int w, int h) {
  return "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"" + std::to_string(w) + "\" height=\"" +
         std::to_string(h) + "\" viewBox=\"0 0 " + std::to_string(w) + " " + std::to_string(h) +
         "\" font-family=\"sans-serif\">\n<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n";
}

// Colour for t in [0, 1]: white through blue (a sequential scale readable in print).
std::string Shade(double t) {
  t = std::min(1.0, std::max(0.0, t));
  const int r = static_cast<int>(247 - t * (247 - 8));
  const int g = static_cast<int>(251 - t * (251 - 48));
  const int b = static_cast<int>(255 - t * (255 - 107));
  char buf[16];
  std::snprintf(buf, sizeof(buf), "#%02x%02x%02x", r, g, b);
  return buf;
}

}  // namespace

std::string RenderLinePlot(const LinePlot& plot) {
  // The legend sits right of the plot: leave room for its longest label (~7 px a character at 12 px).
  size_t longest = 0;
  for (const PlotSeries& s : plot.series) longest = std::max(longest, s.label.size());
  const double left = 70, right = std::min(std::max(170.0, 44.0 + 7.0 * longest), 0.5 * plot.width), top = 40,
               bottom = 55;
  const double pw = plot.width - left - right, ph = plot.height - top - bottom;
  double x0 = std::numeric_limits<double>::infinity(), x1 = -x0, y0 = x0, y1 = -x0;
  for (const PlotSeries& s : plot.series) {
    for (const auto& [x, y] : s.points) {
      if (!std::isfinite(x) || !std::isfinite(y)) continue;
      x0 = std::min(x0, x), x1 = std::max(x1, x), y0 = std::min(y0, y), y1 = std::max(y1, y);
    }
  }
  if (!(x0 <= x1)) x0 = 0, x1 = 1, y0 = 0, y1 = 1;
  if (x1 - x0 < 1e-12) x0 -= 0.5, x1 += 0.5;
  if (y1 - y0 < 1e-12) y0 -= std::max(1e-3, std::fabs(y0) * 1e-3), y1 += std::max(1e-3, std::fabs(y1) * 1e-3);
  const double pad = 0.06 * (y1 - y0);
  y0 -= pad, y1 += pad;
  auto X = [&](double x) { return left + (x - x0) / (x1 - x0) * pw; };
  auto Y = [&](double y) { return top + (1.0 - (y - y0) / (y1 - y0)) * ph; };

  std::string svg = Header(plot.width, plot.height);
  svg += Text(plot.width / 2.0, 22, plot.title, "middle", 15, "font-weight=\"bold\"");
  svg += "<rect x=\"" + Num(left) + "\" y=\"" + Num(top) + "\" width=\"" + Num(pw) + "\" height=\"" + Num(ph) +
         "\" fill=\"none\" stroke=\"#444\"/>\n";
  const double xs = NiceStep(x0, x1, 8), ys = NiceStep(y0, y1, 6);
  for (double x = std::ceil(x0 / xs) * xs; x <= x1 + 1e-9 * xs; x += xs) {
    svg += "<line x1=\"" + Num(X(x)) + "\" y1=\"" + Num(top) + "\" x2=\"" + Num(X(x)) + "\" y2=\"" + Num(top + ph) +
           "\" stroke=\"#e5e5e5\"/>\n";
    svg += Text(X(x), top + ph + 18, TickLabel(x, xs));
  }
  for (double y = std::ceil(y0 / ys) * ys; y <= y1 + 1e-9 * ys; y += ys) {
    svg += "<line x1=\"" + Num(left) + "\" y1=\"" + Num(Y(y)) + "\" x2=\"" + Num(left + pw) + "\" y2=\"" + Num(Y(y)) +
           "\" stroke=\"#e5e5e5\"/>\n";
    svg += Text(left - 8, Y(y) + 4, TickLabel(y, ys), "end");
  }
  svg += Text(left + pw / 2, plot.height - 12, plot.x_label);
  svg += Text(18, top + ph / 2, plot.y_label, "middle", 12,
              ("transform=\"rotate(-90 18 " + Num(top + ph / 2) + ")\"").c_str());
  for (size_t i = 0; i < plot.series.size(); ++i) {
    const PlotSeries& s = plot.series[i];
    const std::string color = s.color.empty() ? kPalette[i % 8] : s.color;
    std::string path;
    for (const auto& [x, y] : s.points) {
      if (!std::isfinite(x) || !std::isfinite(y)) continue;
      path += (path.empty() ? "M" : " L") + Num(X(x)) + " " + Num(Y(y));
      if (s.markers) {
        svg += "<circle cx=\"" + Num(X(x)) + "\" cy=\"" + Num(Y(y)) + "\" r=\"3.5\" fill=\"" + color + "\"/>\n";
      }
    }
    if (s.line && !path.empty()) {
      svg += "<path d=\"" + path + "\" fill=\"none\" stroke=\"" + color + "\" stroke-width=\"2\"/>\n";
    }
    const double ly = top + 14 + 20 * i;
    svg += "<rect x=\"" + Num(left + pw + 14) + "\" y=\"" + Num(ly - 9) + "\" width=\"14\" height=\"10\" fill=\"" +
           color + "\"/>\n";
    svg += Text(left + pw + 34, ly, s.label, "start");
  }
  return svg + "</svg>\n";
}

std::string RenderHeatmap(const Heatmap& map) {
  const size_t rows = map.values.size(), cols = rows ? map.values[0].size() : 0;
  const double cell = map.cell > 0 ? map.cell : std::max(6.0, std::min(48.0, 560.0 / std::max<size_t>(1, std::max(rows, cols))));
  const double left = 90, top = 44, bottom = 70, right = 90;
  const int w = static_cast<int>(left + cols * cell + right), h = static_cast<int>(top + rows * cell + bottom);
  std::string svg = Header(w, h);
  svg += Text(w / 2.0, 24, map.title, "middle", 15, "font-weight=\"bold\"");
  const double span = map.vmax - map.vmin;
  // Label every k-th row/column so that labels never overlap.
  const size_t every = static_cast<size_t>(std::ceil(14.0 / cell));
  for (size_t r = 0; r < rows; ++r) {
    for (size_t c = 0; c < cols && c < map.values[r].size(); ++c) {
      const double v = map.values[r][c];
      const double x = left + c * cell, y = top + r * cell;
      const std::string fill = std::isfinite(v) ? Shade(span > 0 ? (v - map.vmin) / span : 0.0) : "#ffffff";
      svg += "<rect x=\"" + Num(x) + "\" y=\"" + Num(y) + "\" width=\"" + Num(cell) + "\" height=\"" + Num(cell) +
             "\" fill=\"" + fill + "\" stroke=\"#ffffff\" stroke-width=\"0.5\"><title>" +
             Escape((r < map.row_labels.size() ? map.row_labels[r] : "") + " / " +
                    (c < map.col_labels.size() ? map.col_labels[c] : "") + ": " + Num(v, 3)) +
             "</title></rect>\n";
      if (map.annotate && std::isfinite(v) && cell >= 26) {
        const bool dark = span > 0 && (v - map.vmin) / span > 0.6;
        svg += Text(x + cell / 2, y + cell / 2 + 4, Num(v, 2), "middle", 10,
                    dark ? "fill=\"white\"" : "fill=\"black\"");
      }
    }
    if (r < map.row_labels.size() && r % every == 0) {
      svg += Text(left - 6, top + r * cell + cell / 2 + 4, map.row_labels[r], "end", 11);
    }
  }
  for (size_t c = 0; c < cols && c < map.col_labels.size(); ++c) {
    if (c % every != 0) continue;
    svg += Text(left + c * cell + cell / 2, top + rows * cell + 16, map.col_labels[c], "middle", 11);
  }
  svg += Text(left + cols * cell / 2, h - 24, map.x_label);
  svg += Text(22, top + rows * cell / 2, map.y_label, "middle", 12,
              ("transform=\"rotate(-90 22 " + Num(top + rows * cell / 2) + ")\"").c_str());
  // Colour bar.
  const double bx = left + cols * cell + 24, bh = std::max(60.0, rows * cell);
  for (int i = 0; i < 20; ++i) {
    svg += "<rect x=\"" + Num(bx) + "\" y=\"" + Num(top + bh * (19 - i) / 20.0) + "\" width=\"14\" height=\"" +
           Num(bh / 20.0 + 0.5) + "\" fill=\"" + Shade(i / 19.0) + "\"/>\n";
  }
  svg += Text(bx + 18, top + 10, Num(map.vmax, 2), "start", 11);
  svg += Text(bx + 18, top + bh, Num(map.vmin, 2), "start", 11);
  return svg + "</svg>\n";
}

Status WriteSvg(const std::string& path, const std::string& svg) { return WriteFileAtomic(path, svg); }

std::string WithExtension(const std::string& path, const std::string& ext) {
  const size_t slash = path.find_last_of('/');
  const size_t dot = path.find_last_of('.');
  if (dot != std::string::npos && (slash == std::string::npos || dot > slash)) return path.substr(0, dot) + ext;
  return path + ext;
}

}  // namespace indexcache
