#!/usr/bin/python3
"""Reference training trajectories for `matc train`: for each bundled model,
a small data folder (pb:DIR layout: DIR/<k>/input_0.pb, DIR/<k>/target_0.pb)
and the losses of the first 20 steps of PyTorch training on it, in order
(no shuffling), with SGD-momentum and with AdamW, from the same initial
weights as models/<name>/model.onnx, in train mode (BatchNormalization on
batch statistics). Loss: cross-entropy over the last
axis of the output, targets -100 ignored (masked-LM positions), mean.
AdamW decays only parameters of rank >= 2, as matc does.

A reference is only useful where PyTorch reproduces it: each trajectory
is recomputed with 1 thread, without oneDNN (mkldnn) and once more as is,
and the largest relative spread per step is stored as "spread"; a
trajectory whose spread exceeds SPREAD_MAX (a tenth of the test's 1e-3)
is refused.

Writes tests/train/<name>/data/ and tests/train/<name>/reference.json.
usage: tools/make_train_refs.py [NAMES...]   (developer tool: python3-torch)
"""
import json
import os
import sys

import torch
from onnx import numpy_helper

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import export_models  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
STEPS, BATCH = 20, 4
HYPER = {
    "sgd": dict(lr=0.05, momentum=0.9),
    "adamw": dict(lr=1e-3, weight_decay=0.01),
}
# vgg-small (BatchNormalization over batches of 4, max pooling) at the
# default settings is not reproducible by PyTorch itself: its own float32
# runs with 1 or 2 threads, with or without oneDNN, spread by 2.3e-2 (SGD,
# from step 3) and 2.2e-3 (AdamW, from step 13). At these settings they
# agree within 3e-7 and 2e-6.
MODEL_HYPER = {
    "vgg-small": {"sgd": dict(lr=0.02, momentum=0.9), "adamw": dict(lr=3e-4, weight_decay=0.01)},
}
SPREAD_MAX = 1e-4


def hyper(name):
    return MODEL_HYPER.get(name, HYPER)


def make_data(name, model, x0, n):
    g = torch.Generator().manual_seed(99)
    with torch.no_grad():
        y0 = model(x0[:1])
    classes = y0.shape[-1]
    if x0.dtype == torch.float32:
        x = torch.rand((n,) + tuple(x0.shape[1:]), generator=g)
        t = torch.randint(0, classes, (n,) + tuple(y0.shape[1:-1]), generator=g)
    else:
        x = torch.randint(0, export_models.VOCAB, (n,) + tuple(x0.shape[1:]), generator=g)
        t = torch.randint(0, classes, x.shape, generator=g)
        keep = torch.rand(x.shape, generator=g) < 0.15
        t[~keep] = -100
    return x, t


def losses(name, opt_name, x, t):
    model, _ = export_models.build(name)
    # BatchNormalization uses batch statistics while training (matc does
    # the same unless --freeze-bn); nothing else here depends on the mode.
    model.train(True)
    params = [p for p in model.parameters() if p.requires_grad]
    h = hyper(name)
    if opt_name == "sgd":
        opt = torch.optim.SGD(params, **h["sgd"])
    else:
        decay = [p for p in params if p.dim() >= 2]
        rest = [p for p in params if p.dim() < 2]
        opt = torch.optim.AdamW([{"params": decay, "weight_decay": h["adamw"]["weight_decay"]},
                                 {"params": rest, "weight_decay": 0.0}], lr=h["adamw"]["lr"])
    out = []
    for s in range(STEPS):
        xb, tb = x[s * BATCH:(s + 1) * BATCH], t[s * BATCH:(s + 1) * BATCH]
        opt.zero_grad()
        y = model(xb)
        loss = torch.nn.functional.cross_entropy(y.reshape(-1, y.shape[-1]), tb.reshape(-1), ignore_index=-100)
        loss.backward()
        opt.step()
        out.append(float(loss))
    return out


def spread(name, opt_name, x, t, want):
    """Largest relative difference per step between `want` (2 threads,
    oneDNN on) and PyTorch's other float32 runs of the same trajectory."""
    worst = [0.0] * len(want)
    for threads, onednn in [(2, True), (1, True), (2, False)]:
        torch.set_num_threads(threads)
        torch.backends.mkldnn.enabled = onednn
        got = losses(name, opt_name, x, t)
        worst = [max(w, abs(g - v) / max(abs(v), 1e-12)) for w, g, v in zip(worst, got, want)]
    torch.set_num_threads(2)
    torch.backends.mkldnn.enabled = True
    return worst


def main():
    names = sys.argv[1:] or export_models.MODEL_NAMES
    torch.set_num_threads(2)
    for name in names:
        model, x0 = export_models.build(name)
        x, t = make_data(name, model, x0, STEPS * BATCH)
        d = os.path.join(ROOT, "tests", "train", name)
        for k in range(STEPS * BATCH):
            e = os.path.join(d, "data", str(k))
            os.makedirs(e, exist_ok=True)
            for fn, arr, nm in [("input_0.pb", x[k], "input"), ("target_0.pb", t[k], "target")]:
                with open(os.path.join(e, fn), "wb") as f:
                    f.write(numpy_helper.from_array(arr.numpy(), nm).SerializeToString())
        ref = {"steps": STEPS, "batch": BATCH, "hyper": hyper(name),
               "sgd": losses(name, "sgd", x, t), "adamw": losses(name, "adamw", x, t)}
        ref["spread"] = {o: spread(name, o, x, t, ref[o]) for o in ("sgd", "adamw")}
        for o in ("sgd", "adamw"):
            if max(ref["spread"][o]) > SPREAD_MAX:
                sys.exit("%s %s: PyTorch's own runs spread by %.1e (over %.0e): pick settings it reproduces"
                         % (name, o, max(ref["spread"][o]), SPREAD_MAX))
        with open(os.path.join(d, "reference.json"), "w") as f:
            json.dump(ref, f, indent=1)
        print(name, "sgd", ["%.4f" % v for v in ref["sgd"][:3]], "adamw", ["%.4f" % v for v in ref["adamw"][:3]])


if __name__ == "__main__":
    main()
