#!/usr/bin/python3
"""Forward-pass benchmark: matc against PyTorch, side by side, same model,
same input, same thread count. Prints per-model medians and the ratio
(PyTorch time / matc time; above 1 means matc is faster).

Developer tool (needs python3-torch); matc itself does not.
usage: tools/bench_forward.py [--matc build/matc] [--threads 2] [--batch 8]
                              [--repeat 30] [MODEL ...]
"""
import argparse
import os
import re
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


def torch_median_ms(model, x, repeat):
    with torch.no_grad():
        for _ in range(3):
            model(x)
        times = []
        for _ in range(repeat):
            t = time.perf_counter()
            model(x)
            times.append((time.perf_counter() - t) * 1e3)
    return statistics.median(times)


def matc_median_ms(matc, onnx_path, x, in_name, threads, repeat):
    with tempfile.TemporaryDirectory() as d:
        with open(os.path.join(d, "input_0.pb"), "wb") as f:
            f.write(numpy_helper.from_array(x.numpy(), in_name).SerializeToString())
        env = dict(os.environ, OPENBLAS_NUM_THREADS=str(threads))
        r = subprocess.run([matc, "run", onnx_path, "--data", d, "--repeat", str(repeat),
                            "--threads", str(threads)], capture_output=True, text=True, env=env)
        m = re.search(r"compile ([\d.]+) ms, run median ([\d.]+) ms", r.stderr)
        if r.returncode != 0 or not m:
            raise RuntimeError("matc failed on %s: %s" % (onnx_path, r.stderr.strip()[-400:]))
        return float(m.group(2)), float(m.group(1))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--matc", default=os.path.join(ROOT, "build", "matc"))
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--repeat", type=int, default=30)
    bench_malloc.add_option(ap)
    ap.add_argument("models", nargs="*", default=export_models.MODEL_NAMES)
    a = ap.parse_args()
    bench_malloc.reexec(a.torch_malloc)
    torch.set_num_threads(a.threads)
    print("forward pass, batch %d, %d threads, median of %d runs (torch %s)" %
          (a.batch, a.threads, a.repeat, torch.__version__))
    print("%-12s %12s %12s %10s %12s" % ("model", "pytorch ms", "matc ms", "speedup", "compile ms"))
    for name in a.models:
        model, x0 = export_models.build(name)
        reps = (a.batch + x0.shape[0] - 1) // x0.shape[0]
        x = torch.cat([x0] * reps)[:a.batch].contiguous()
        onnx_path = os.path.join(ROOT, "models", name, "model.onnx")
        in_name = "input" if x.dtype == torch.float32 else "input_ids"
        try:
            tm, comp = matc_median_ms(a.matc, onnx_path, x, in_name, a.threads, a.repeat)
        except RuntimeError as e:
            print("%-12s %s" % (name, e))
            continue
        tt = torch_median_ms(model, x, a.repeat)
        print("%-12s %12.3f %12.3f %9.2fx %12.1f" % (name, tt, tm, tt / tm, comp), flush=True)


if __name__ == "__main__":
    main()
