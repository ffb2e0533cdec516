#!/usr/bin/python3
"""Data-parallel benchmark (README, "Data-parallel training"): bert-mini
masked-LM training steps with one process and with mpirun -np 2 at the
same global batch, MAT off and on; prints the step time (median of the
compiled step's time, which for 2 ranks includes waiting for the gradient
sums, and the wall time per step of the whole loop, probes included) and
the gradient bytes each rank all-reduced per step, with the bytes MAT
saved. On a machine with C cores: one process with C threads, one with
C/2, and 2 ranks with C/2 threads each.

usage: tools/bench_mpi.py [--matc build/matc] [--batch 8] [--steps 40] [--skip 10] [--threads C]
       [--data SPEC] [--mat-args "..."]
Python standard library only; needs mpirun (Open MPI).
"""
import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile

src = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ap = argparse.ArgumentParser()
ap.add_argument("--matc", default=os.path.join(src, "build/matc"))
ap.add_argument("--model", default=os.path.join(src, "models/bert-mini/model.onnx"))
ap.add_argument("--data", default="text:/usr/share/games/fortunes:mlm:128")
ap.add_argument("--batch", type=int, default=8, help="global batch")
ap.add_argument("--steps", type=int, default=40)
ap.add_argument("--skip", type=int, default=10, help="first steps left out (MAT's warm-up)")
ap.add_argument("--threads", type=int, default=os.cpu_count())
ap.add_argument("--mat-args", default="--mat-warmup 10 --mat-refresh 10 --mat-probe-samples 16")
a = ap.parse_args()
mpirun = shutil.which("mpirun")
if not mpirun:
    sys.exit("bench_mpi: no mpirun (apt-get install openmpi-bin libopenmpi-dev)")
env = dict(os.environ, OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1",
           OMPI_MCA_rmaps_base_oversubscribe="1", OMPI_MCA_btl_vader_single_copy_mechanism="none")
base = [a.model, "--data", a.data, "--steps", str(a.steps), "--optimizer", "adamw", "--lr", "0.001",
        "--eval-fraction", "0.01", "--eval-every", "1000000", "--seed", "1"]


def run(ranks, mat, tmp, threads):
    log = os.path.join(tmp, "r%d-%s-%d.jsonl" % (ranks, "mat" if mat else "full", threads))
    opts = base + ["--batch", str(a.batch // ranks), "--threads", str(threads), "--log", log]
    if mat:
        opts += ["--mat", "on"] + a.mat_args.split()
    cmd = ([mpirun, "-np", str(ranks)] if ranks > 1 else []) + [a.matc, "train"] + opts
    p = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if p.returncode:
        sys.exit("bench_mpi: %s failed:\n%s" % (" ".join(cmd), p.stderr[-3000:]))
    rows = [json.loads(l) for l in open(log) if '"loss"' in l]
    done = re.search(r"done: (\d+) steps in ([0-9.]+) s", p.stderr)
    keep = [r for r in rows[a.skip:] if "lambda" not in r]           # no probe steps
    return {
        "ms": statistics.median(r["ms"] for r in keep),
        "wall": 1000 * float(done.group(2)) / int(done.group(1)),
        "sent": statistics.mean(r.get("comm_bytes", 0) for r in rows[a.skip:]),
        "saved": statistics.mean(r.get("comm_saved", 0) for r in rows[a.skip:]),
        "wait": statistics.median(r.get("comm_ms", 0) for r in keep),
        "loss": rows[-1]["loss"],
        "losses": [r["loss"] for r in rows],
    }


print("bert-mini, AdamW, global batch %d, %d steps; step times are medians over steps %d.. (probe steps left out), "
      "bytes means over them; %d cores" % (a.batch, a.steps, a.skip + 1, a.threads), flush=True)
half = max(1, a.threads // 2)
res = {}
with tempfile.TemporaryDirectory() as tmp:
    for mat in (False, True):
        for ranks, threads in ((1, a.threads), (1, half), (2, half)):
            if mat and (ranks, threads) == (1, half) and half != a.threads:
                continue
            res[ranks, mat, threads] = r = run(ranks, mat, tmp, threads)
            print("  %-4s %d rank%s x %d thread%s: step %7.1f ms (wall %7.1f ms/step), waiting for sums %6.1f ms; "
                  "all-reduced %6.3f MB/step, MAT saved %6.3f MB/step; final loss %.4f" %
                  ("MAT" if mat else "full", ranks, " " if ranks == 1 else "s", threads, " " if threads == 1 else "s",
                   r["ms"], r["wall"], r["wait"], r["sent"] / 1e6, r["saved"] / 1e6, r["loss"]), flush=True)
for mat in (False, True):
    l1, l2 = res[1, mat, a.threads]["losses"], res[2, mat, half]["losses"]
    worst = max(abs(x - y) / abs(x) for x, y in zip(l1, l2))
    print("%s: 2 ranks vs 1 process, largest relative loss difference over %d steps: %.2e" %
          ("MAT" if mat else "full", len(l1), worst))
full, matr = res[2, False, half], res[2, True, half]
print("gradient bytes per step and rank: %.3f MB without MAT, %.3f MB with MAT (%.1f%% less)" %
      (full["sent"] / 1e6, matr["sent"] / 1e6, 100 * (1 - matr["sent"] / full["sent"]) if full["sent"] else 0))
