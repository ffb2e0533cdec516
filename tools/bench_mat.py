#!/usr/bin/python3
"""The paper's claim at our scale: full training against MAT, same model,
data, budget and seeds, and a table like the paper's (standard library only;
it runs build/matc and reads its metrics logs).

For each model and seed it trains twice (--mat off, --mat on with the MAT
options below), evaluating every --eval-every steps, and reports per mode:
the final and best evaluation metric (accuracy; for the text models the
masked/next-token accuracy), total executed FLOPs (forward, backward,
optimizer and, for MAT, the mNTK probe: the log's "flops"), total step time
(the compiled steps' and probes' milliseconds, without compilation and
evaluation), and the FLOPs and time MAT needed to first reach the full run's
best metric of the same seed (or "never"). Logs and plots (tools/plot_mat.py)
go to --out.

usage: tools/bench_mat.py [--models bert-mini,switch-mini,vgg-small] [--seeds 1,2,3]
                          [--steps N] [--out DIR] [--threads T] [-- extra matc options]
"""
import argparse
import json
import os
import statistics
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MATC = os.path.join(ROOT, "build", "matc")
FMNIST = "idx:/usr/share/datasets/fashion-mnist"
FORTUNES = "/usr/share/games/fortunes"
REUSE = False

# model -> (data, options, steps, eval_every)
SETUP = {
    "bert-mini": ("text:%s:mlm:128" % FORTUNES,
                  "--batch 8 --optimizer adamw --lr 1e-3 --weight-decay 0.01 --warmup 20 --schedule cosine "
                  "--eval-fraction 0.01", 200, 20),
    "switch-mini": ("text:%s:causal:64" % FORTUNES,
                    "--batch 16 --optimizer adamw --lr 2e-3 --weight-decay 0.01 --warmup 20 --schedule cosine "
                    "--eval-fraction 0.01 --freeze causal_mask,expert_ids", 300, 30),
    "vgg-small": (FMNIST, "--batch 32 --optimizer sgd --momentum 0.9 --lr 0.05 --weight-decay 5e-4 "
                  "--warmup 20 --schedule cosine --eval-fraction 0.05", 300, 30),
}


def run(model, seed, mat, steps, eval_every, out, threads, extra, mat_opts):
    data, opts, _, _ = SETUP[model]
    tag = "%s-%s-s%d" % (model, "mat" if mat else "full", seed)
    log = os.path.join(out, tag + ".jsonl")
    cmd = [MATC, "train", os.path.join(ROOT, "models", model, "model.onnx"), "--data", data] + opts.split() + \
        ["--steps", str(steps), "--eval-every", str(eval_every), "--seed", str(seed), "--log", log,
         "--threads", str(threads), "--mat", "on" if mat else "off"] + (mat_opts if mat else []) + extra
    done = os.path.exists(log) and any('"step":%d,"loss"' % steps in l for l in open(log))
    if not (REUSE and done):
        with open(os.path.join(out, tag + ".err"), "w") as err:
            rc = subprocess.run(cmd, stderr=err).returncode
        if rc:
            sys.exit("%s failed (exit %d): see %s" % (" ".join(cmd), rc, os.path.join(out, tag + ".err")))
    steps_, evals = [], []
    for line in open(log):
        r = json.loads(line)
        if "loss" in r:
            steps_.append(r)
        if "eval_acc" in r:
            evals.append(r)
    cum_f, cum_t, at = 0.0, 0.0, {}
    for r in steps_:
        cum_f += r["flops"]
        cum_t += r["ms"] + r.get("probe_ms", 0)
        at[r["step"]] = (cum_f, cum_t)
    return {"evals": [(e["step"], e["eval_acc"]) for e in evals], "flops": cum_f, "ms": cum_t, "at": at,
            "final": evals[-1]["eval_acc"] if evals else float("nan"),
            "best": max((e["eval_acc"] for e in evals), default=float("nan")), "log": log}


def reach(r, target):
    for step, acc in r["evals"]:
        if acc >= target:
            return r["at"][step]
    return None


def fmt(v):
    return "%.4f +- %.4f" % (statistics.mean(v), statistics.pstdev(v)) if v else "-"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--models", default="bert-mini,switch-mini,vgg-small")
    ap.add_argument("--seeds", default="1,2,3")
    ap.add_argument("--steps", type=int, default=0, help="override each model's step budget")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", default="/tmp/matc-bench-mat")
    ap.add_argument("--mat-opts", default="", help="MAT options for the MAT runs (default: matc's defaults)")
    ap.add_argument("--reuse", action="store_true", help="keep the logs of finished runs in --out")
    ap.add_argument("extra", nargs="*")
    a = ap.parse_args()
    global REUSE
    REUSE = a.reuse
    os.makedirs(a.out, exist_ok=True)
    seeds = [int(s) for s in a.seeds.split(",")]
    mat_opts = a.mat_opts.split()
    print("| model | mode | final acc | best acc | TFLOP | step time s | TFLOP to full's best | "
          "time to full's best s |")
    print("|---|---|---|---|---|---|---|---|")
    for model in a.models.split(","):
        steps = a.steps or SETUP[model][2]
        ev = max(1, steps // 10) if a.steps else SETUP[model][3]
        res = {m: [run(model, s, m, steps, ev, a.out, a.threads, a.extra, mat_opts) for s in seeds] for m in (0, 1)}
        for m in (0, 1):
            rs = res[m]
            reached = [reach(r, f["best"]) for r, f in zip(rs, res[0])]
            got = [x for x in reached if x]
            rf = "%.3f (%d/%d seeds)" % (statistics.mean(x[0] for x in got) / 1e12, len(got), len(rs)) if got else \
                "never"
            rt = "%.1f" % (statistics.mean(x[1] for x in got) / 1e3) if got else "never"
            print("| %s | %s | %s | %s | %.3f | %.1f | %s | %s |" % (
                model, "MAT" if m else "full", fmt([r["final"] for r in rs]), fmt([r["best"] for r in rs]),
                statistics.mean(r["flops"] for r in rs) / 1e12, statistics.mean(r["ms"] for r in rs) / 1e3, rf, rt))
        full_f = statistics.mean(r["flops"] for r in res[0])
        mat_f = statistics.mean(r["flops"] for r in res[1])
        full_t = statistics.mean(r["ms"] for r in res[0])
        mat_t = statistics.mean(r["ms"] for r in res[1])
        print("| %s | saved | | | %.1f%% | %.1f%% | | |" % (model, 100 * (1 - mat_f / full_f),
                                                           100 * (1 - mat_t / full_t)))
        sys.stdout.flush()
        for s, r, f in zip(seeds, res[1], res[0]):
            subprocess.run(["/usr/bin/python3", os.path.join(ROOT, "tools", "plot_mat.py"), r["log"], "--compare",
                            f["log"], "-o", os.path.join(a.out, "%s-s%d.svg" % (model, s))],
                           stdout=subprocess.DEVNULL)
    print("logs and plots in %s" % a.out)


if __name__ == "__main__":
    main()
