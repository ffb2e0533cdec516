#!/usr/bin/python3
"""`matc train --mat on` end to end on the bundled mlp (python3 standard
library only):

 1. log: a probe line every --mat-refresh steps with lambda, trace and
    state for every module; "active" equals the modules whose state is 1;
    executed FLOPs fall below the full step's when a module is frozen, and
    a probe step adds its probe_flops;
 2. frozen means untouched: with every module frozen after warm-up
    (alpha far above any lambda, --mat-min-active 0), fc1/fc2 and their
    momentum are bit-identical between a run of W steps and one of W + 6,
    while the always-on output layer fc3 keeps training;
 3. resume: 12 steps in one run == 6 + checkpoint + --resume 6 (losses,
    eigenvalues, decisions, checkpoint bytes);
 4. tools/plot_mat.py draws the log as well-formed SVG;
 5. bad options and a model with no module give clear errors.

usage: mat_train.py MATC SRCDIR
"""
import os
import re
import subprocess
import sys
import tempfile
import xml.dom.minidom

import ckpt

matc, src = sys.argv[1], sys.argv[2]
model = os.path.join(src, "models/mlp/model.onnx")
data = ["--data", "pb:" + os.path.join(src, "tests/train/mlp/data"), "--batch", "4", "--eval-fraction", "0"]
base = data + ["--optimizer", "sgd", "--lr", "0.02", "--momentum", "0.9", "--seed", "3", "--mat", "on",
               "--mat-probe-samples", "8"]
failures = 0


def check(ok, what):
    global failures
    print(("ok   " if ok else "FAIL ") + what)
    if not ok:
        failures += 1


def train(args, tmp, name, rc=0):
    p = subprocess.run([matc, "train", model] + args, cwd=tmp, capture_output=True, text=True)
    if p.returncode != rc:
        print(p.stderr)
        sys.exit("FAIL %s: exit status %d, expected %d" % (name, p.returncode, rc))
    return p.stderr


def steps(path):
    return ckpt.log_steps(path)


def tensors(path):
    """name -> bytes of every tensor in a checkpoint."""
    return {k: v[2] for k, v in ckpt.checkpoint_tensors(path).items()}


with tempfile.TemporaryDirectory() as tmp:
    # 1. The log of a run where alpha 0.9 freezes the weaker module.
    train(base + ["--steps", "12", "--mat-warmup", "2", "--mat-refresh", "2", "--mat-alpha", "0.9",
                  "--log", "a.jsonl"], tmp, "log run")
    rows = steps(os.path.join(tmp, "a.jsonl"))
    check(len(rows) == 12, "12 step lines")
    probes = [r for r in rows if "lambda" in r]
    check([r["step"] for r in probes] == [1, 3, 5, 7, 9, 11], "a probe every 2 steps (steps %s)" %
          [r["step"] for r in probes])
    names = set(probes[0]["lambda"])
    check(names == {"fc1", "fc2"}, "modules fc1, fc2 (got %s)" % sorted(names))
    check(all(set(r["trace"]) == names and set(r["state"]) == names for r in probes), "trace and state per module")
    check(all(r["lambda"][m] > 0 and r["trace"][m] >= r["lambda"][m] * (1 - 1e-6) for r in probes for m in names),
          "0 < lambda_max <= trace")
    check(all(r["lambda_all"] >= max(r["lambda"].values()) * (1 - 1e-6) and
              r["lambda_all"] <= sum(r["lambda"].values()) * (1 + 1e-6) for r in probes),
          "max_k lambda_k <= lambda_max(G) <= sum_k lambda_k")
    state, ok, frozen_seen = None, True, False
    for r in rows:
        if "state" in r:
            state = r["state"]
        ok &= r["active"] == sum(state.values()) and r["modules"] == 2
        extra = r.get("probe_flops", 0)
        if r["active"] < 2:
            frozen_seen = True
            ok &= r["flops"] - extra < r["flops_full"]
        else:
            ok &= abs(r["flops"] - extra - r["flops_full"]) <= 1e-6 * r["flops_full"]
    check(ok, "active = modules in state 1; flops = full (+ probe) with all active, below full with one frozen")
    check(frozen_seen, "alpha 0.9 froze a module after warm-up")
    check(all(r["state"] == {"fc1": 1, "fc2": 1} for r in probes if r["step"] <= 2), "warm-up keeps all active")

    # 2. Everything frozen after warm-up: fc1, fc2 untouched, fc3 trains.
    frz = base + ["--mat-warmup", "4", "--mat-refresh", "2", "--mat-alpha", "1e30", "--mat-min-active", "0"]
    train(frz + ["--steps", "4", "--checkpoint", "W"], tmp, "W steps")
    train(frz + ["--steps", "10", "--checkpoint", "W6"], tmp, "W + 6 steps")
    a, b = tensors(os.path.join(tmp, "W/checkpoint.matc")), tensors(os.path.join(tmp, "W6/checkpoint.matc"))
    same = [k for k in ("fc1.weight", "fc1.bias", "fc2.weight", "fc2.bias", "fc1.weight.momentum",
                        "fc2.weight.momentum") if a[k] == b[k]]
    check(len(same) == 6, "frozen fc1/fc2 and their momentum bit-identical over 6 more steps (same: %s)" % same)
    check(a["fc3.weight"] != b["fc3.weight"], "always-on fc3 kept training")
    check(a["matc.guards"] == b"\x01\x01" and b["matc.guards"] == b"\x00\x00",
          "checkpointed guards: active before the freeze, frozen after")

    # 3. Resume with MAT: 12 == 6 + 6.
    opts = base + ["--mat-warmup", "2", "--mat-refresh", "3", "--mat-alpha", "0.7", "--steps", "12"]
    train(opts + ["--log", "u.jsonl", "--checkpoint", "U"], tmp, "uninterrupted")
    train(base + ["--mat-warmup", "2", "--mat-refresh", "3", "--mat-alpha", "0.7", "--steps", "6",
                  "--log", "r.jsonl", "--checkpoint", "R"], tmp, "first half")
    err = train(opts + ["--log", "r.jsonl", "--checkpoint", "R", "--resume", "R"], tmp, "resumed")

    def strip(path):
        return [re.sub(r',"(probe_)?ms":[0-9.e+-]+', "", l) for l in open(os.path.join(tmp, path))]
    check(strip("u.jsonl") == strip("r.jsonl"), "MAT resume: 6 + 6 steps' log == 12 steps' (losses, lambdas, states)")
    check(open(os.path.join(tmp, "U/checkpoint.matc"), "rb").read() ==
          open(os.path.join(tmp, "R/checkpoint.matc"), "rb").read(), "MAT resume: identical final checkpoints")
    check("MAT:" in err and "saved" in err, "the summary reports FLOPs saved")

    # 4. The plot.
    p = subprocess.run(["/usr/bin/python3", os.path.join(src, "tools/plot_mat.py"), os.path.join(tmp, "a.jsonl"),
                        "--compare", os.path.join(tmp, "u.jsonl"), "-o", os.path.join(tmp, "a.svg")],
                       capture_output=True, text=True)
    ok = p.returncode == 0
    if ok:
        svg = open(os.path.join(tmp, "a.svg")).read()
        xml.dom.minidom.parseString(svg)
        ok = svg.count("<rect") >= 2 * 6 and "fc1" in svg
    check(ok, "tools/plot_mat.py draws the log (%s)" % (p.stderr.strip() or "svg"))

    # 5. Errors.
    e = train(base + ["--mat-ref", "median", "--steps", "1"], tmp, "bad --mat-ref", rc=2)
    check("--mat-ref median" in e, "bad --mat-ref value named")
    e = train(base + ["--mat-alpha", "-1", "--steps", "1"], tmp, "bad --mat-alpha", rc=2)
    check("--mat-alpha -1" in e, "negative --mat-alpha refused")
    e = train(base + ["--mat-probe-samples", "500", "--steps", "1"], tmp, "too many probe samples", rc=1)
    check("--mat-probe-samples 500" in e, "more probe samples than training examples refused")

print("%s" % ("all passed" if not failures else "%d failed" % failures))
sys.exit(1 if failures else 0)
