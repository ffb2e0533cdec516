#!/usr/bin/python3
"""Training-step benchmark: `matc train` against PyTorch, side by side in one
run, same model, batch, thread count, loss and optimizer (SGD with momentum
0.9), on the bundled data. matc's step time is the median of the "ms" column
of its JSON Lines log (the compiled step: forward, loss, backward, update);
PyTorch's is the median wall time of zero_grad + forward + loss + backward +
optimizer.step. GFLOP/s divides the operations matc counts for one step
(the "flops" key, counted by the code that runs them) by each step time; the
SGEMM peak is OpenBLAS on N=1024 square products with the same threads
(build/sgemm_peak), measured in the same run.

PyTorch runs in a fresh child process per measurement, with glibc's
allocator told to keep freed memory (tools/bench_malloc.py: left to its
defaults, glibc makes some PyTorch processes fault their step's buffers in
again every step). The "faults" column is PyTorch's median minor page
faults per step, so a run that still pays them shows; --torch-malloc
default measures PyTorch with glibc's defaults.

On a shared machine one run says little: --repeat N measures each model N
times, matc and PyTorch alternating, prints every run and then the median
speedup and both sides' median and fastest step.

Developer tool (needs python3-torch).
usage: tools/bench_train.py [--threads 2] [--steps N] [--repeat 1]
                            [--torch-malloc tuned|default] [MODEL[:BATCH] ...]
"""
import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench_malloc  # noqa: E402
import export_models  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MATC = os.path.join(ROOT, "build", "matc")
FMNIST = "idx:/usr/share/datasets/fashion-mnist"
FORTUNES = "/usr/share/games/fortunes"

# model -> (default batch, data spec, extra matc options)
SETUP = {
    "mlp": (64, FMNIST, []),
    "vgg-small": (64, FMNIST, []),
    "bert-mini": (16, "text:%s:mlm:128" % FORTUNES, []),
    "switch-mini": (16, "text:%s:causal:64" % FORTUNES, ["--freeze", "causal_mask,expert_ids"]),
}


def matc_step(name, batch, threads, steps):
    _, spec, extra = SETUP[name]
    with tempfile.TemporaryDirectory() as tmp:
        log = os.path.join(tmp, "log.jsonl")
        cmd = [MATC, "train", os.path.join(ROOT, "models", name, "model.onnx"), "--data", spec,
               "--steps", str(steps), "--batch", str(batch), "--threads", str(threads),
               "--optimizer", "sgd", "--momentum", "0.9", "--lr", "0.01", "--eval-fraction", "0.05",
               "--eval-every", str(10 * steps), "--log", log] + extra
        subprocess.run(cmd, check=True, stderr=subprocess.DEVNULL)
        rows = [json.loads(l) for l in open(log) if '"loss"' in l]
    ms = [r["ms"] for r in rows[3:]]          # skip the first steps (page faults, pool start)
    return statistics.median(ms), statistics.median(r["flops"] for r in rows)


def torch_step(name, batch, threads, steps):
    torch.set_num_threads(threads)
    model, x0 = export_models.build(name)
    model.train()
    g = torch.Generator().manual_seed(0)
    kind = export_models.SPECS[name]["kind"]
    if kind == "image":
        x = torch.rand((batch,) + tuple(x0.shape[1:]), generator=g)
        y = torch.randint(0, 10, (batch,), generator=g)
    else:
        x = torch.randint(0, export_models.VOCAB, (batch,) + tuple(x0.shape[1:]), generator=g)
        y = torch.randint(0, export_models.VOCAB, x.shape, generator=g)
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)

    def step():
        opt.zero_grad(set_to_none=True)
        out = model(x)
        loss = F.cross_entropy(out.reshape(-1, out.shape[-1]), y.reshape(-1))
        loss.backward()
        opt.step()

    for _ in range(3):
        step()
    times, faults = [], []
    for _ in range(steps - 3):
        f = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        t = time.perf_counter()
        step()
        times.append((time.perf_counter() - t) * 1e3)
        faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - f)
    return statistics.median(times), statistics.median(faults)


def torch_step_child(name, batch, threads, steps, malloc):
    """torch_step in a fresh process, so each measurement starts from the
    same allocator state and the environment above applies from its start."""
    env = bench_malloc.env(malloc)
    out = subprocess.run([sys.executable, os.path.abspath(__file__), "--torch-child", name, str(batch),
                          str(threads), str(steps)], check=True, env=env, capture_output=True, text=True).stdout
    r = json.loads(out.strip().splitlines()[-1])
    return r["ms"], r["faults"]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--steps", type=int, default=0,
                    help="steps per measurement, both sides (default 30; 300 for mlp, whose step is 1 ms)")
    ap.add_argument("--repeat", type=int, default=1)
    bench_malloc.add_option(ap)
    ap.add_argument("--torch-child", nargs=4, help=argparse.SUPPRESS)
    ap.add_argument("models", nargs="*", default=list(SETUP))
    a = ap.parse_args()
    if a.torch_child:
        name, batch, threads, steps = a.torch_child
        ms, faults = torch_step(name, int(batch), int(threads), int(steps))
        print(json.dumps({"ms": ms, "faults": faults}))
        return
    peak = float(subprocess.run([os.path.join(ROOT, "build", "sgemm_peak"), str(a.threads), "1024", "9"],
                                check=True, capture_output=True, text=True).stdout)
    print("OpenBLAS SGEMM peak, %d threads: %.1f GFLOP/s; PyTorch %s, allocator %s" %
          (a.threads, peak, torch.__version__, a.torch_malloc))
    print("%-12s %5s %10s %10s %8s %10s %8s %10s %7s" % ("model", "batch", "matc ms", "torch ms", "speedup",
                                                          "GFLOP/s", "of peak", "torch GF/s", "faults"))
    for m in a.models:
        name, _, b = m.partition(":")
        batch = int(b) if b else SETUP[name][0]
        runs = []
        for _ in range(a.repeat):
            steps = a.steps or (300 if name == "mlp" else 30)
            ms, flops = matc_step(name, batch, a.threads, steps)
            tms, faults = torch_step_child(name, batch, a.threads, steps, a.torch_malloc)
            runs.append((ms, tms))
            gf = flops / ms / 1e6
            print("%-12s %5d %10.2f %10.2f %7.2fx %10.1f %7.1f%% %10.1f %7d" %
                  (name, batch, ms, tms, tms / ms, gf, 100 * gf / peak, flops / tms / 1e6, faults))
            sys.stdout.flush()
        if a.repeat > 1:
            mine, theirs = [r[0] for r in runs], [r[1] for r in runs]
            print("%-12s %d runs: speedup median %.2fx (%.2fx to %.2fx); matc step median %.2f ms, fastest %.2f; "
                  "PyTorch median %.2f ms, fastest %.2f (fastest against fastest: %.2fx)"
                  % (name, a.repeat, statistics.median(t / m for m, t in runs), min(t / m for m, t in runs),
                     max(t / m for m, t in runs), statistics.median(mine), min(mine), statistics.median(theirs),
                     min(theirs), min(theirs) / min(mine)))
            sys.stdout.flush()


if __name__ == "__main__":
    main()
