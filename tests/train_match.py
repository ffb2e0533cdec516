#!/usr/bin/python3
"""The first 20 training steps of matc against PyTorch's (reference made by
tools/make_train_refs.py): same initial weights, data in order, same
optimizer and hyper-parameters. Every step's loss must agree to 1e-3
relative. Standard library only.

usage: tests/train_match.py MATC MODEL.onnx REFDIR sgd|adamw [EXTRA MATC OPTIONS...]
"""
import json
import os
import subprocess
import sys
import tempfile

matc, model, refdir, opt = sys.argv[1:5]
extra = sys.argv[5:]
ref = json.load(open(os.path.join(refdir, "reference.json")))
hyper = ref["hyper"][opt]
with tempfile.TemporaryDirectory() as d:
    log = os.path.join(d, "log.jsonl")
    cmd = [matc, "train", model, "--data", "pb:" + os.path.join(refdir, "data"), "--batch", str(ref["batch"]),
           "--steps", str(ref["steps"]), "--optimizer", opt, "--lr", str(hyper["lr"]), "--no-shuffle",
           "--eval-fraction", "0", "--log", log]
    cmd += extra
    if opt == "sgd":
        cmd += ["--momentum", str(hyper["momentum"])]
    else:
        cmd += ["--weight-decay", str(hyper["weight_decay"])]
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode:
        print(r.stdout, r.stderr)
        sys.exit(1)
    got = [json.loads(line)["loss"] for line in open(log) if '"loss"' in line]
want = ref[opt]
bad = 0
for i, (g, w) in enumerate(zip(got, want)):
    rel = abs(g - w) / max(abs(w), 1e-12)
    flag = "ok" if rel <= 1e-3 else "MISMATCH"
    bad += rel > 1e-3
    print("step %2d: matc %.6f pytorch %.6f rel %.2e %s" % (i + 1, g, w, rel, flag))
if len(got) != len(want):
    print("matc logged %d steps, the reference has %d" % (len(got), len(want)))
    bad += 1
print("%d passed, %d failed" % (len(want) - bad, bad))
sys.exit(1 if bad else 0)
