#!/usr/bin/env python3
"""Pictures for docs/experiments.md from the committed raw results (plain SVG, no plotting library).

    python3 tools/experiments/plot_reference.py docs/experiments

Reads distill_*.jsonl (training logs of `indexcache train`) and eval_distilled.json
(tools/reference_model/evaluate.py, merged by run_reference.sh part2) from that folder and writes
distill_curves.svg (loss against tokens seen, one line per run) and retrieval_heatmaps.svg (passkey
accuracy by context length x needle depth, one panel per model and pattern).
"""
import json
import os
import sys

COLORS = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b"]


def esc(s):
    return str(s).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def text(x, y, s, anchor="middle", size=12, extra=""):
    return f'<text x="{x:.1f}" y="{y:.1f}" font-size="{size}" text-anchor="{anchor}" {extra}>{esc(s)}</text>\n'


def svg(w, h, body):
    return (f'<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" font-family="sans-serif">\n'
            f'<rect width="100%" height="100%" fill="white"/>\n{body}</svg>\n')


def distill_curves(folder, runs):
    """runs: [(label, file)]; x = tokens seen (step x 4 x 8192), y = the logged training loss."""
    series = []
    for label, name in runs:
        rows = [json.loads(l) for l in open(os.path.join(folder, name)) if l.strip()]
        series.append((label, [(r["step"] * 4 * 8192 / 1e6, r["loss"]) for r in rows]))
    w, h, left, right, top, bottom = 760, 400, 70, 260, 40, 55
    pw, ph = w - left - right, h - top - bottom
    xs = [x for _, pts in series for x, _ in pts]
    ys = [y for _, pts in series for _, y in pts]
    x0, x1, y0, y1 = 0.0, max(xs), 0.0, max(ys) * 1.05
    X = lambda x: left + (x - x0) / (x1 - x0) * pw
    Y = lambda y: top + (1 - (y - y0) / (y1 - y0)) * ph
    body = text(w / 2, 22, "Indexer distillation, 120 s of one H200 per run", size=15, extra='font-weight="bold"')
    body += f'<rect x="{left}" y="{top}" width="{pw}" height="{ph}" fill="none" stroke="#888"/>\n'
    for i in range(6):
        yv = y0 + (y1 - y0) * i / 5
        body += f'<line x1="{left}" x2="{left + pw}" y1="{Y(yv):.1f}" y2="{Y(yv):.1f}" stroke="#eee"/>\n'
        body += text(left - 6, Y(yv) + 4, f"{yv:.2f}", "end", 11)
        xv = x0 + (x1 - x0) * i / 5
        body += text(X(xv), top + ph + 16, f"{xv:.1f}", "middle", 11)
    body += text(left + pw / 2, h - 12, "training tokens (millions)")
    body += text(18, top + ph / 2, "distillation loss (KL, nats)", extra=f'transform="rotate(-90 18 {top + ph / 2})"')
    for i, (label, pts) in enumerate(series):
        c = COLORS[i % len(COLORS)]
        path = " ".join(f"{'M' if j == 0 else 'L'}{X(x):.1f},{Y(y):.1f}" for j, (x, y) in enumerate(pts))
        body += f'<path d="{path}" fill="none" stroke="{c}" stroke-width="2"/>\n'
        ly = top + 14 + 20 * i
        body += f'<rect x="{left + pw + 14}" y="{ly - 9}" width="14" height="10" fill="{c}"/>\n'
        body += text(left + pw + 34, ly, label, "start", 12)
    note = ["SERVED: KL to the average attention of the", "4 layers each Full layer serves; OWN: to its",
            "own layer's. Different targets: compare", "held-out loss (table), not these curves."]
    for j, line in enumerate(note):
        body += text(left + pw + 14, top + 100 + 16 * j, line, "start", 11, 'fill="#555"')
    return svg(w, h, body)


def retrieval_heatmaps(evals, panels):
    """panels: [(title, run, pattern key)]; cells: passkey accuracy at length x depth."""
    cell, gap, left, top = 34, 50, 60, 60
    first = evals[panels[0][1]]["passkey"][panels[0][2]]["by_length_depth"]
    lengths = sorted({int(k.split("@")[0]) for k in first})
    depths = sorted({float(k.split("@")[1]) for k in first})
    pw = cell * len(depths)
    cols = 3
    rows = (len(panels) + cols - 1) // cols
    w = left + cols * (pw + gap) + 20
    h = top + rows * (cell * len(lengths) + 70) + 10
    body = text(w / 2, 24, "Passkey retrieval by context length x needle depth", size=15, extra='font-weight="bold"')
    for p, (title, run, key) in enumerate(panels):
        cells = evals[run]["passkey"][key]["by_length_depth"]
        ox = left + (p % cols) * (pw + gap)
        oy = top + (p // cols) * (cell * len(lengths) + 70)
        body += text(ox + pw / 2, oy - 8, title, size=12)
        for r, L in enumerate(lengths):
            for c, d in enumerate(depths):
                v = cells.get(f"{L}@{d}", 0.0)
                shade = int(245 - 200 * v)
                fill = f"rgb({shade},{shade + 8 if shade < 247 else 255},255)"
                x, y = ox + c * cell, oy + r * cell
                body += f'<rect x="{x}" y="{y}" width="{cell}" height="{cell}" fill="{fill}" stroke="white"/>\n'
                body += text(x + cell / 2, y + cell / 2 + 4, f"{round(100 * v)}", size=10,
                             extra=f'fill="{"white" if v > 0.5 else "black"}"')
            if p % cols == 0:
                body += text(ox - 6, oy + r * cell + cell / 2 + 4, f"{L // 1024}K", "end", 11)
        for c, d in enumerate(depths):
            body += text(ox + c * cell + cell / 2, oy + len(lengths) * cell + 14, f"{d:g}", size=10)
        body += text(ox + pw / 2, oy + len(lengths) * cell + 30, "depth", size=11)
    return svg(w, h, body)


def main(folder):
    runs = [("uniform 1/4, SERVED", "distill_uniform_served.jsonl"), ("uniform 1/4, OWN", "distill_uniform_own.jsonl"),
            ("searched 1/4, SERVED", "distill_searched_served.jsonl")]
    with open(os.path.join(folder, "distill_curves.svg"), "w") as f:
        f.write(distill_curves(folder, runs))
    evals = json.load(open(os.path.join(folder, "eval_distilled.json")))
    panels = [("all-F", "base", "dsa:all"), ("uniform 1/4", "base", "dsa:FSSSFSSSFSSSFSSS"),
              ("searched 1/4", "base", "dsa:FSSSSSFSSSFSSSFS"),
              ("uniform 1/4 + SERVED", "uniform_served", "dsa:FSSSFSSSFSSSFSSS"),
              ("uniform 1/4 + OWN", "uniform_own", "dsa:FSSSFSSSFSSSFSSS"),
              ("searched 1/4 + SERVED", "searched_served", "dsa:FSSSSSFSSSFSSSFS")]
    with open(os.path.join(folder, "retrieval_heatmaps.svg"), "w") as f:
        f.write(retrieval_heatmaps(evals, panels))


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    main(sys.argv[1])
