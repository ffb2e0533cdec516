#!/usr/bin/python3
"""Draws a MAT training run from its JSON Lines metrics log (matc train --log)
as one SVG file, with nothing but the Python standard library:

  1. lambda_max of every module at every probe (the paper's Figure 1 view):
     a heatmap, modules down, probes across, colour = log10(lambda); a cell
     whose module was frozen after that probe is crossed out;
  2. the number of active modules over the steps;
  3. training loss (moving average) against steps and against cumulative
     executed FLOPs, for this run and, with --compare FULL.jsonl, a full
     (MAT off) run; evaluation points when the logs have them.

usage: tools/plot_mat.py MAT.jsonl [--compare FULL.jsonl] [-o OUT.svg] [--smooth N]
"""
import argparse
import json
import math
import sys


def read_log(path):
    steps, evals, probes = [], [], []
    with open(path) as f:
        for n, line in enumerate(f, 1):
            line = line.strip()
            if not line:
                continue
            try:
                r = json.loads(line)
            except ValueError as e:
                sys.exit("%s:%d: not JSON: %s" % (path, n, e))
            if "loss" in r:
                steps.append(r)
            if "eval_loss" in r or "eval_acc" in r:
                evals.append(r)
            if "lambda" in r:
                probes.append(r)
    if not steps:
        sys.exit("%s: no training steps (lines with \"loss\")" % path)
    return steps, evals, probes


def smooth(v, n):
    out, s = [], 0.0
    for i, x in enumerate(v):
        s += x
        if i >= n:
            s -= v[i - n]
        out.append(s / min(i + 1, n))
    return out


def colour(t):
    """A perceptually ordered ramp (dark blue -> teal -> yellow), t in [0,1]."""
    stops = [(0.0, (48, 18, 59)), (0.25, (50, 100, 200)), (0.5, (30, 170, 150)),
             (0.75, (160, 210, 60)), (1.0, (250, 230, 40))]
    t = min(max(t, 0.0), 1.0)
    for (a, ca), (b, cb) in zip(stops, stops[1:]):
        if t <= b:
            u = (t - a) / (b - a)
            return "rgb(%d,%d,%d)" % tuple(round(x + u * (y - x)) for x, y in zip(ca, cb))
    return "rgb(250,230,40)"


class Svg:
    def __init__(self, w, h):
        self.w, self.h, self.parts = w, h, []

    def add(self, s):
        self.parts.append(s)

    def text(self, x, y, s, size=11, anchor="start", rotate=None):
        tr = ' transform="rotate(%d %g %g)"' % (rotate, x, y) if rotate else ""
        s = s.replace("&", "&amp;").replace("<", "&lt;")
        self.add('<text x="%g" y="%g" font-size="%d" text-anchor="%s"%s>%s</text>' % (x, y, size, anchor, tr, s))

    def line(self, x1, y1, x2, y2, stroke="#000", w=1):
        self.add('<line x1="%g" y1="%g" x2="%g" y2="%g" stroke="%s" stroke-width="%g"/>' % (x1, y1, x2, y2, stroke, w))

    def poly(self, pts, stroke, w=1.5):
        if pts:
            self.add('<polyline fill="none" stroke="%s" stroke-width="%g" points="%s"/>' %
                     (stroke, w, " ".join("%.1f,%.1f" % p for p in pts)))

    def rect(self, x, y, w, h, fill, stroke="none"):
        self.add('<rect x="%g" y="%g" width="%g" height="%g" fill="%s" stroke="%s"/>' % (x, y, w, h, fill, stroke))

    def save(self, path):
        with open(path, "w") as f:
            f.write('<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" font-family="sans-serif">\n'
                    % (self.w, self.h))
            f.write('<rect width="100%" height="100%" fill="white"/>\n')
            f.write("\n".join(self.parts))
            f.write("\n</svg>\n")


def axes(svg, x0, y0, w, h, xr, yr, title, xlabel, ylabel, logy=False):
    svg.rect(x0, y0, w, h, "none", "#444")
    svg.text(x0 + w / 2, y0 - 8, title, 13, "middle")
    svg.text(x0 + w / 2, y0 + h + 32, xlabel, 11, "middle")
    svg.text(x0 - 45, y0 + h / 2, ylabel, 11, "middle", rotate=-90)
    for i in range(5):
        fx, fy = xr[0] + (xr[1] - xr[0]) * i / 4, yr[0] + (yr[1] - yr[0]) * i / 4
        svg.text(x0 + w * i / 4, y0 + h + 15, "%.3g" % fx, 10, "middle")
        svg.text(x0 - 4, y0 + h - h * i / 4 + 4, "%.3g" % fy, 10, "end")

    def map_pt(x, y):
        return (x0 + (x - xr[0]) / ((xr[1] - xr[0]) or 1) * w, y0 + h - (y - yr[0]) / ((yr[1] - yr[0]) or 1) * h)
    return map_pt


def heatmap(svg, x0, y0, w, probes):
    names = list(probes[0]["lambda"].keys())
    vals = [math.log10(v) for p in probes for v in p["lambda"].values() if v and v > 0]
    lo, hi = (min(vals), max(vals)) if vals else (0.0, 1.0)
    if hi - lo < 1e-9:
        hi = lo + 1
    rowh = max(4, min(16, 480 // max(1, len(names))))
    cw = w / len(probes)
    h = rowh * len(names)
    svg.text(x0 + w / 2, y0 - 8, "lambda_max per module (log10, colour) at each probe; x = frozen after it", 13,
             "middle")
    for j, p in enumerate(probes):
        state = p.get("state", {})
        for i, m in enumerate(names):
            v = p["lambda"].get(m)
            x, y = x0 + j * cw, y0 + i * rowh
            c = colour((math.log10(v) - lo) / (hi - lo)) if v and v > 0 else "#ccc"
            svg.rect(x, y, cw + 0.3, rowh + 0.3, c)
            if state.get(m, 1) == 0:
                svg.line(x, y, x + cw, y + rowh, "#fff", 1)
                svg.line(x, y + rowh, x + cw, y, "#fff", 1)
    if rowh >= 8:
        for i, m in enumerate(names):
            svg.text(x0 - 4, y0 + i * rowh + rowh - 2, m, min(10, rowh), "end")
    for j in range(0, len(probes), max(1, len(probes) // 8)):
        svg.text(x0 + (j + 0.5) * cw, y0 + h + 14, str(probes[j]["step"]), 10, "middle")
    svg.text(x0 + w / 2, y0 + h + 30, "step of the probe", 11, "middle")
    # colour bar
    for k in range(50):
        svg.rect(x0 + w + 20, y0 + h - (k + 1) * h / 50, 12, h / 50 + 0.5, colour(k / 49))
    svg.text(x0 + w + 36, y0 + 10, "%.2g" % hi, 10)
    svg.text(x0 + w + 36, y0 + h, "%.2g" % lo, 10)
    return h


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("log")
    ap.add_argument("--compare", help="log of a full (MAT off) run of the same model")
    ap.add_argument("-o", "--out", default="mat.svg")
    ap.add_argument("--smooth", type=int, default=20, help="moving-average window for the loss")
    a = ap.parse_args()
    steps, evals, probes = read_log(a.log)
    runs = [("MAT" if probes else "run", steps, evals, "#d62728")]
    if a.compare:
        fs, fe, _ = read_log(a.compare)
        runs.append(("full", fs, fe, "#1f77b4"))

    W = 1000
    svg = Svg(W, 10)
    y = 40
    if probes:
        y += heatmap(svg, 220, y, W - 320, probes) + 70
        st = [r["step"] for r in steps]
        act = [r.get("active", 0) for r in steps]
        nm = max(r.get("modules", 0) for r in steps) or max(act) or 1
        m = axes(svg, 220, y, W - 320, 120, (st[0], st[-1]), (0, nm), "active modules", "step", "active")
        svg.poly([m(s, v) for s, v in zip(st, act)], "#d62728")
        y += 120 + 70
    else:
        svg.text(W / 2, y, "(no probe lines in %s: MAT was off)" % a.log, 12, "middle")
        y += 30

    # loss against steps and against cumulative FLOPs
    allloss = [v for _, s, _, _ in runs for v in smooth([r["loss"] for r in s], a.smooth)]
    lr = (min(allloss), max(allloss))
    maxstep = max(s[-1]["step"] for _, s, _, _ in runs)
    cum = {}
    for name, s, _, _ in runs:
        c, out = 0.0, []
        for r in s:
            c += r.get("flops", 0.0)
            out.append(c)
        cum[name] = out
    maxf = max(v[-1] for v in cum.values()) or 1
    pw = (W - 220) / 2 - 40
    m1 = axes(svg, 80, y, pw, 220, (0, maxstep), lr, "training loss (moving average %d)" % a.smooth, "step", "loss")
    m2 = axes(svg, 80 + pw + 110, y, pw, 220, (0, maxf / 1e12), lr, "training loss against executed FLOPs",
              "TFLOP (forward, backward, optimizer, probe)", "loss")
    for i, (name, s, ev, col) in enumerate(runs):
        sm = smooth([r["loss"] for r in s], a.smooth)
        svg.poly([m1(r["step"], v) for r, v in zip(s, sm)], col)
        svg.poly([m2(f / 1e12, v) for f, v in zip(cum[name], sm)], col)
        best = max((e["eval_acc"] for e in ev if "eval_acc" in e), default=None)
        label = "%s: %d steps, %.3g TFLOP" % (name, s[-1]["step"], cum[name][-1] / 1e12)
        if best is not None:
            label += ", best eval accuracy %.2f%%" % (100 * best)
        svg.rect(90, y + 12 + 16 * i, 14, 3, col)
        svg.text(110, y + 17 + 16 * i, label, 11)
    y += 220 + 60
    svg.h = y
    svg.save(a.out)
    print("wrote %s (%d steps, %d probes%s)" % (a.out, len(steps), len(probes),
                                               ", compared with " + a.compare if a.compare else ""))


if __name__ == "__main__":
    main()
