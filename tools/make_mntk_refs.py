#!/usr/bin/python3
"""Reference mNTK Grams for the probe test (tests/mntk/mntk_check.c).

For each bundled model: a probe batch of n samples (seeded), modules made of
parameter slices (whole layers; attention heads as the column slices of
Q/K/V with their bias slices plus the row slice of the output projection;
experts), and, from explicit per-sample gradients (float64 autograd, one
backward per sample), each module's Gram G_k = J_k J_k^T, its largest
eigenvalue and trace, and the same for the whole model's Gram over the
union of the modules' slices (computed from the concatenated gradients,
not as a sum of the G_k). Sample i's scalar output is its own loss: cross-
entropy over the last axis averaged over its targets that are not -100.
The model runs in eval mode (BatchNormalization on running statistics).

For the models in tests/models (gpt-tiny with a fused QKV projection,
vit-tiny, switch-tiny, resnet-tiny, cnn-bn-train) the modules are those
of matc's partition pass, read from `matc inspect MODEL --json` (the
reference then says `partition auto`, and the test checks that the pass
still finds the same modules). Parameters the exporter stored transposed
or reshaped are mapped back (export_models.map_initializers).

Writes tests/mntk/<name>/{input.pb,target.pb,reference.txt}.
usage: tools/make_mntk_refs.py [--matc build/matc] [NAMES...]   (developer tool: python3-torch)
"""
import json
import subprocess
import os
import sys

import numpy as np
import onnx
import torch
import torch.nn.functional as F
from onnx import numpy_helper

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import export_models  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SAMPLES = {"mlp": 8, "vgg-small": 4, "bert-mini": 4, "switch-mini": 4,
           "gpt-tiny": 6, "vit-tiny": 6, "switch-tiny": 6, "resnet-tiny": 4, "cnn-bn-train": 4,
           "moe-stacked": 8}
# Rademacher-mode references (logits contracted with m sign vectors shared
# by the samples; G_k is the mean of the m Grams): tests/mntk/<name>-rademacher.
RADEMACHER = {"mlp": 3, "gpt-tiny": 2}
FOREIGN = ("gpt-tiny", "vit-tiny", "switch-tiny", "resnet-tiny", "cnn-bn-train", "moe-stacked")
MOE_STACKED = os.path.join(ROOT, "tests", "partition", "moe-stacked", "model.onnx")


class MoEStacked(torch.nn.Module):
    """tests/partition/moe-stacked (stacked [E, K, N] expert weights) in
    torch, on the ONNX file's initializers; each row of x is a sample."""

    def __init__(self):
        super().__init__()
        om = onnx.load(MOE_STACKED)
        self.p = torch.nn.ParameterDict({
            i.name.replace(".", "_"): torch.nn.Parameter(torch.from_numpy(numpy_helper.to_array(i).copy()))
            for i in om.graph.initializer if i.data_type == onnx.TensorProto.FLOAT})

    def forward(self, x):
        w = self.p
        gate = torch.softmax(x @ w["moe_router_weight"] + w["moe_router_bias"], -1)        # [T, E]
        h = torch.relu(x[None] @ w["moe_experts_w1"] + w["moe_experts_b1"])                # [E, T, F]
        y = h @ w["moe_experts_w2"] + w["moe_experts_b2"]                                  # [E, T, D]
        return (y * gate.T[..., None]).sum(0) @ w["head_weight"]


def whole(p):
    return (p, -1, 0, 0)


def layer(name, *params):
    return (name, "layer", [whole(p) for p in params])


def heads(prefix, n_heads, d_head):
    """Head h: columns [h*d, (h+1)*d) of Q/K/V (Dense stores W as [in, out])
    and their biases, rows of the output projection."""
    out = []
    for h in range(n_heads):
        b, e = h * d_head, (h + 1) * d_head
        sl = []
        for w in ("q", "k", "v"):
            sl.append(("%s.%s.weight" % (prefix, w), 1, b, e))
            sl.append(("%s.%s.bias" % (prefix, w), 0, b, e))
        sl.append(("%s.o.weight" % prefix, 0, b, e))
        out.append(("%s.head%d" % (prefix, h), "head", sl))
    return out


def modules_of(name, model):
    if name == "mlp":
        return [layer(f, f + ".weight", f + ".bias") for f in ("fc1", "fc2", "fc3")]
    if name == "vgg-small":
        convs = [n for n, p in model.named_parameters() if p.dim() == 4]
        return [layer(c[:-len(".weight")], c) for c in convs] + \
            [layer(f, f + ".weight", f + ".bias") for f in ("fc1", "fc2")]
    if name == "bert-mini":
        mods = []
        for i in range(4):
            p = "layers.%d" % i
            mods += heads(p + ".attn", 4, 64)
            mods += [layer(p + "." + f, "%s.%s.weight" % (p, f), "%s.%s.bias" % (p, f)) for f in ("ff1", "ff2")]
        return mods + [layer(f, f + ".weight", f + ".bias") for f in ("mlm_dense", "mlm_out")]
    if name == "switch-mini":
        mods = []
        for b in range(2):
            p = "blocks.%d" % b
            mods += heads(p + ".attn", 4, 32)
            mods.append(layer(p + ".moe.router", p + ".moe.router.weight", p + ".moe.router.bias"))
            for e in range(4):
                q = "%s.moe.experts.%d" % (p, e)
                mods.append(("%s" % q, "expert", [whole(q + s) for s in
                                                  (".fc1.weight", ".fc1.bias", ".fc2.weight", ".fc2.bias")]))
        return mods + [layer("head", "head.weight", "head.bias")]
    raise ValueError(name)


def partition_modules(matc, path):
    """The partition pass's modules: (name, kind, [(initializer, axis, begin, end)])."""
    out = subprocess.run([matc, "inspect", path, "--json"], check=True, capture_output=True, text=True).stdout
    return [(m["name"], m["kind"], [(s["param"], s.get("axis", -1), s.get("begin", 0), s.get("end", 0)) for s in m["slices"]])
            for m in json.loads(out)["modules"]]


def build_any(name):
    if name == "moe-stacked":
        torch.manual_seed(5)
        return MoEStacked().float(), torch.rand(2, 16)
    return export_models.build_foreign(name) if name in FOREIGN else export_models.build(name)


def make_batch(name, model, n):
    """n seeded samples and targets: one class per output position (the
    output's shape without its last axis); for token models most targets
    are -100 (ignored), as in masked-LM batches."""
    g = torch.Generator().manual_seed(4242)
    _, x0 = build_any(name)
    with torch.no_grad():
        y0 = model(x0[:1].double() if x0.is_floating_point() else x0[:1])
    classes, positions = y0.shape[-1], tuple(y0.shape[1:-1])
    if x0.is_floating_point():
        x = torch.rand((n,) + tuple(x0.shape[1:]), generator=g)
        t = torch.randint(0, classes, (n,) + positions, generator=g)
    else:
        vocab = classes if name in FOREIGN else export_models.VOCAB
        x = torch.randint(0, vocab, (n,) + tuple(x0.shape[1:]), generator=g)
        t = torch.randint(0, classes, (n,) + positions, generator=g)
        t[torch.rand(t.shape, generator=g) >= (0.3 if name in FOREIGN else 0.15)] = -100
    return x, t


def sample_loss(model, x, t):
    y = model(x)
    valid = (t != -100).sum().clamp(min=1)
    return F.cross_entropy(y.reshape(-1, y.shape[-1]).double(), t.reshape(-1), ignore_index=-100,
                           reduction="sum") / valid


def cut(grad, axis, b, e):
    if axis < 0:
        return grad.reshape(-1)
    return grad.narrow(axis, b, e - b).reshape(-1)


def to_onnx_layout(grad, how, shape):
    if how == "T":
        return grad.T
    if how == "reshape":
        return grad.reshape(shape)
    if how != "id":
        raise SystemExit("initializer stored as %s of a parameter: not handled" % how)
    return grad


def main():
    args = sys.argv[1:]
    matc = os.path.join(ROOT, "build", "matc")
    if args[:1] == ["--matc"]:
        matc, args = args[1], args[2:]
    names = args or list(SAMPLES) + [n + "-rademacher" for n in RADEMACHER]
    torch.set_num_threads(2)
    for full in names:
        name = full[:-len("-rademacher")] if full.endswith("-rademacher") else full
        m_vec = RADEMACHER[name] if full != name else 0
        model, _ = build_any(name)
        model = model.double().eval()
        path = os.path.join(ROOT, "tests" if name in FOREIGN else "", "models", name, "model.onnx")
        if name == "moe-stacked":
            path = MOE_STACKED
        om = onnx.load(path)
        shapes = {i.name: tuple(i.dims) for i in om.graph.initializer}
        # Buffers as the file has them (a training-mode export ran forward
        # passes that moved BatchNormalization's running statistics).
        inits = {i.name: i for i in om.graph.initializer}
        with torch.no_grad():
            for bname, buf in model.named_buffers():
                if bname in inits and tuple(inits[bname].dims) == tuple(buf.shape):
                    buf.copy_(torch.from_numpy(numpy_helper.to_array(inits[bname]).copy()))
        mapped, _, _, _ = export_models.map_initializers(build_any(name)[0], om)
        # initializer -> (parameter, how), and parameter -> initializer for hand-written modules
        source, onnx_name = {}, {}
        for init, ms in mapped:
            if len(ms) != 1:
                raise SystemExit("%s: initializer %s holds %d merged parameters: not handled" % (name, init, len(ms)))
            source[init] = ms[0]
            onnx_name[ms[0][0]] = init
        n = SAMPLES[name]
        x, t = make_batch(name, model, n)
        if name in FOREIGN:
            mods = partition_modules(matc, path)
        else:
            mods = [(m, k, [(onnx_name[p], a, b, e) for p, a, b, e in sl]) for m, k, sl in modules_of(name, model)]
        params = dict(model.named_parameters())
        vecs = None
        if m_vec:
            with torch.no_grad():
                yshape = model(x[:1].double() if x.is_floating_point() else x[:1]).shape[1:]
            gv = torch.Generator().manual_seed(777)
            vecs = (torch.randint(0, 2, (m_vec,) + tuple(yshape), generator=gv) * 2 - 1).double()
        npass = max(m_vec, 1)
        rows = [{m[0]: [] for m in mods} for _ in range(npass)]
        for r in range(npass):
            for i in range(n):
                xi = x[i:i + 1].double() if x.is_floating_point() else x[i:i + 1]
                out = (model(xi)[0] * vecs[r]).sum() if m_vec else sample_loss(model, xi, t[i:i + 1])
                grads = dict(zip(params, torch.autograd.grad(out, list(params.values()), allow_unused=True)))
                for mname, _, slices in mods:
                    parts = []
                    for init, a, b, e in slices:
                        pname, how = source[init]
                        gr = grads[pname] if grads[pname] is not None else torch.zeros_like(params[pname])
                        parts.append(cut(to_onnx_layout(gr, how, shapes[init]), a, b, e))
                    rows[r][mname].append(torch.cat(parts))
        d = os.path.join(ROOT, "tests", "mntk", full)
        os.makedirs(d, exist_ok=True)
        export_models.save_tensor(x.numpy() if x.is_floating_point() else x.numpy().astype(np.int64),
                                  om.graph.input[0].name, os.path.join(d, "input.pb"))
        export_models.save_tensor(t.numpy().astype(np.int64), "target", os.path.join(d, "target.pb"))
        lines = ["model %s" % os.path.relpath(path, ROOT), "samples %d" % n]
        if name in FOREIGN:
            lines.append("partition auto")
        if m_vec:
            lines.append("rademacher %d" % m_vec)
            export_models.save_tensor(vecs.float().numpy(), "vectors", os.path.join(d, "vectors.pb"))
        allrows = [[] for _ in range(npass)]
        for mname, kind, slices in mods:
            G = 0
            for r in range(npass):
                J = torch.stack(rows[r][mname])            # [n, p_k]
                allrows[r].append(J)
                G = G + (J @ J.T).numpy() / npass
            lam = float(np.linalg.eigvalsh(G)[-1])
            lines.append("module %s %s" % (mname, kind))
            for p, a, b, e in slices:
                lines.append("slice %s %d %d %d" % (p, a, b, e))
            lines.append("value %.17g %.17g" % (lam, float(np.trace(G))))
        G = 0
        for r in range(npass):
            J = torch.cat(allrows[r], dim=1)
            G = G + (J @ J.T).numpy() / npass
        lines.append("all %.17g %.17g" % (float(np.linalg.eigvalsh(G)[-1]), float(np.trace(G))))
        with open(os.path.join(d, "reference.txt"), "w") as f:
            f.write("\n".join(lines) + "\n")
        print("%s: %d modules, %d samples, lambda_max(G) %.6g" % (full, len(mods), n, float(np.linalg.eigvalsh(G)[-1])))


if __name__ == "__main__":
    main()
