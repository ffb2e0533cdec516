#!/usr/bin/python3
"""Forward + backward benchmark: matc against PyTorch, side by side, same
model, input, cotangent and thread count (the training step less the
optimizer and loss: the gradient of sum(output * cotangent) with respect
to every parameter). Prints medians, the speedup, and memory:
  matc: the activation arena of the compiled step (exact planned bytes);
  PyTorch: the peak resident memory the step adds to the process (max RSS
  during the step minus RSS before it, in a fresh subprocess).

Developer tool (needs python3-torch).
usage: tools/bench_train_step.py [--threads 2] [--batch 8] [--repeat 20] [MODEL ...]
"""
import argparse
import os
import re
import resource
import statistics
import subprocess
import sys
import tempfile
import time

import torch
from onnx import numpy_helper

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench_malloc  # noqa: E402
import export_models  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def batch_input(name, batch):
    model, x0 = export_models.build(name)
    reps = (batch + x0.shape[0] - 1) // x0.shape[0]
    return model, torch.cat([x0] * reps)[:batch].contiguous()


def torch_step(name, batch, threads, repeat):
    torch.set_num_threads(threads)
    model, x = batch_input(name, batch)
    with torch.no_grad():
        cot = torch.randn(model(x).shape, generator=torch.Generator().manual_seed(1))
    def step():
        model.zero_grad(set_to_none=True)
        model(x).backward(cot)
    # Peak RSS before any step (after an inference forward) and after:
    # the difference is what one forward+backward step adds at its peak.
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    step()
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        step()
        times.append((time.perf_counter() - t) * 1e3)
    rss1 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return statistics.median(times), (rss1 - rss0) / 1024.0, cot


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--matc", default=os.path.join(ROOT, "build", "matc"))
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--repeat", type=int, default=20)
    ap.add_argument("--child", help=argparse.SUPPRESS)
    bench_malloc.add_option(ap)
    ap.add_argument("models", nargs="*", default=export_models.MODEL_NAMES)
    a = ap.parse_args()
    bench_malloc.reexec(a.torch_malloc)
    if a.child:
        ms, mb, _ = torch_step(a.child, a.batch, a.threads, a.repeat)
        print("%f %f" % (ms, mb))
        return
    print("forward+backward, batch %d, %d threads, median of %d runs" % (a.batch, a.threads, a.repeat))
    print("%-12s %11s %9s %8s %14s %14s" % ("model", "pytorch ms", "matc ms", "speedup",
                                           "pytorch +MB", "matc arena MB"))
    for name in a.models:
        # PyTorch in a fresh process, so its RSS is this step's alone.
        out = subprocess.run([sys.executable, __file__, "--child", name, "--batch", str(a.batch),
                              "--threads", str(a.threads), "--repeat", str(a.repeat)],
                             capture_output=True, text=True)
        if out.returncode:
            print("%-12s pytorch failed: %s" % (name, out.stderr[-300:]))
            continue
        tms, tmb = map(float, out.stdout.split())
        model, x = batch_input(name, a.batch)
        with torch.no_grad():
            y = model(x)
        cot = torch.randn(y.shape, generator=torch.Generator().manual_seed(1))
        with tempfile.TemporaryDirectory() as d:
            in_name = "input" if x.dtype == torch.float32 else "input_ids"
            for fn, arr, nm in [("input_0.pb", x, in_name), ("cotangent_0.pb", cot, "logits")]:
                with open(os.path.join(d, fn), "wb") as f:
                    f.write(numpy_helper.from_array(arr.numpy(), nm).SerializeToString())
            env = dict(os.environ, OPENBLAS_NUM_THREADS="1")
            r = subprocess.run([a.matc, "gradcheck", os.path.join(ROOT, "models", name, "model.onnx"),
                                "--data", d, "--repeat", str(a.repeat), "--threads", str(a.threads)],
                               capture_output=True, text=True, env=env)
        m = re.search(r"forward\+backward median ([\d.]+) ms .*activations ([\d.]+) MB", r.stderr)
        if r.returncode or not m:
            print("%-12s matc failed: %s" % (name, (r.stderr + r.stdout).strip()[-300:]))
            continue
        mms, mmb = float(m.group(1)), float(m.group(2))
        print("%-12s %11.2f %9.2f %7.2fx %14.1f %14.1f" % (name, tms, mms, tms / mms, tmb, mmb), flush=True)


if __name__ == "__main__":
    main()
