#!/usr/bin/env python3
"""Checks the MAT partition `matc inspect --json` reports (standard library only).

usage: partition_check.py MATC SRCDIR CASE
CASE: a model name (mlp, vgg-small, bert-mini, switch-mini, gpt-tiny, vit-tiny,
switch-tiny, resnet-tiny), "file" (partition file: override, add, replace, and
every error), or "dot". Exits 1 on the first wrong number, 77 when `dot` is
missing for the dot case.
"""
import json
import os
import shutil
import subprocess
import sys
import tempfile

matc, src, case = sys.argv[1], sys.argv[2], sys.argv[3]
MODELS = {m: os.path.join(src, "models", m, "model.onnx") for m in ["mlp", "vgg-small", "bert-mini", "switch-mini"]}
MODELS.update({m: os.path.join(src, "tests", "models", m, "model.onnx")
               for m in ["gpt-tiny", "vit-tiny", "switch-tiny", "resnet-tiny"]})
MODELS["moe-stacked"] = os.path.join(src, "tests", "partition", "moe-stacked", "model.onnx")
failures = []


def check(cond, what):
    if not cond:
        failures.append(what)
        print("FAIL", what)


def inspect(model, *args):
    r = subprocess.run([matc, "inspect", MODELS[model], "--json", *args], capture_output=True, text=True)
    if r.returncode != 0:
        print(r.stderr)
        sys.exit(f"FAIL matc inspect {model} {' '.join(args)}: exit {r.returncode}")
    return json.loads(r.stdout)


def module(d, name):
    for m in d["modules"]:
        if m["name"] == name:
            return m
    check(False, f"no module '{name}' in {[m['name'] for m in d['modules']]}")
    return {"slices": [], "sites": [], "params": -1, "kind": "", "fwd_flops": -1, "bwd_flops": -1}


def sl(param, axis=None, begin=None, end=None):
    s = {"param": param}
    if axis is not None:
        s.update(axis=axis, begin=begin, end=end)
    return s


def invariants(d, label):
    """Holds for every partition: sizes add up, no two slices overlap."""
    t = d["module_totals"]
    check(t["modules"] == len(d["modules"]), f"{label}: module count {t['modules']} vs {len(d['modules'])}")
    check(sum(m["params"] for m in d["modules"]) == t["params_in_modules"], f"{label}: params in modules")
    check(t["params_in_modules"] + t["params_always_on"] + t["params_not_trained"] == d["parameters"],
          f"{label}: modules {t['params_in_modules']} + always-on {t['params_always_on']} + not trained "
          f"{t['params_not_trained']} != {d['parameters']} parameters")
    check(t["fwd_flops_modules"] <= t["fwd_flops_layers"] * (1 + 1e-12), f"{label}: module FLOPs exceed the layers'")
    names = [m["name"] for m in d["modules"]]
    check(len(set(names)) == len(names), f"{label}: duplicate module names")
    seen = []
    for m in d["modules"]:
        for s in m["slices"]:
            for (o, t2) in seen:
                if t2["param"] != s["param"]:
                    continue
                disjoint = "axis" in s and "axis" in t2 and s["axis"] == t2["axis"] and \
                    (s["end"] <= t2["begin"] or t2["end"] <= s["begin"])
                check(disjoint, f"{label}: {m['name']} {s} overlaps {o} {t2}")
            seen.append((m["name"], s))
        for site in m["sites"]:
            check(0 <= site["weight"] < len(m["slices"]), f"{label}: {m['name']} site weight index")
            check(-1 <= site["bias"] < len(m["slices"]), f"{label}: {m['name']} site bias index")


def kinds(d):
    k = {}
    for m in d["modules"]:
        k[m["kind"]] = k.get(m["kind"], 0) + 1
    return k


def expect_modules(d, label, **want):
    got = kinds(d)
    for k in ["layer", "head", "expert", "other"]:
        check(got.get(k, 0) == want.get(k, 0), f"{label}: {got.get(k, 0)} {k} modules, want {want.get(k, 0)}")


def expect_slices(d, name, want, kind=None):
    m = module(d, name)
    check(m["slices"] == want, f"{name}: slices {m['slices']}, want {want}")
    if kind:
        check(m["kind"] == kind, f"{name}: kind {m['kind']}, want {kind}")


def gemm(rows, k, n):
    return 2.0 * rows * k * n


def run_model(name):
    d = inspect(name)
    invariants(d, name)
    if name == "mlp":
        expect_modules(d, name, layer=2)
        expect_slices(d, "fc1", [sl("fc1.weight"), sl("fc1.bias")], "layer")
        expect_slices(d, "fc2", [sl("fc2.weight"), sl("fc2.bias")], "layer")
        check(d["module_totals"]["params_always_on"] == 10 * 256 + 10, "mlp: fc3 (the output layer) is always on")
        # fc1 reads the data: no input gradient; fc2 needs both
        check(module(d, "fc1")["fwd_flops"] == gemm(1, 784, 256), "mlp: fc1 forward FLOPs")
        check(module(d, "fc1")["bwd_flops"] == gemm(1, 784, 256), "mlp: fc1 backward FLOPs (weight gradient only)")
        check(module(d, "fc2")["bwd_flops"] == 2 * gemm(1, 256, 256), "mlp: fc2 backward FLOPs")
        d4 = inspect(name, "--batch", "4")
        check(module(d4, "fc2")["fwd_flops"] == gemm(4, 256, 256), "mlp --batch 4: fc2 forward FLOPs")
        do = inspect(name, "--others-as-modules")
        invariants(do, "mlp --others-as-modules")
        expect_modules(do, "mlp --others-as-modules", layer=2, other=1)
        fc3 = module(do, "fc3")
        check(fc3["sites"] == [{"node": "/fc3/Gemm", "weight": 0, "bias": 1, "slice_out": 1, "begin": 0, "end": 0,
                                "stacked": 0}], f"mlp: fc3 site {fc3['sites']}")
        check(do["module_totals"]["params_always_on"] == 0, "mlp --others-as-modules: nothing always on")
    elif name == "vgg-small":
        expect_modules(d, name, layer=7)
        for i in [0, 3, 7, 10, 14, 17]:
            expect_slices(d, f"features.{i}", [sl(f"features.{i}.weight")], "layer")
        expect_slices(d, "fc1", [sl("fc1.weight"), sl("fc1.bias")])
        check(d["module_totals"]["params_not_trained"] == 2 * (32 + 32 + 64 + 64 + 128 + 128), "vgg: BN statistics")
        check(module(d, "features.3")["fwd_flops"] == gemm(28 * 28, 32 * 9, 32), "vgg: features.3 forward FLOPs")
    elif name == "bert-mini":
        expect_modules(d, name, layer=9, head=16)
        for l in range(4):
            for h in range(4):
                a, b = 64 * h, 64 * (h + 1)
                p = f"layers.{l}.attn."
                expect_slices(d, f"layers.{l}.attn.head{h}", [
                    sl(p + "q.weight", 1, a, b), sl(p + "q.bias", 0, a, b), sl(p + "k.weight", 1, a, b),
                    sl(p + "k.bias", 0, a, b), sl(p + "v.weight", 1, a, b), sl(p + "v.bias", 0, a, b),
                    sl(p + "o.weight", 0, a, b)], "head")
            expect_slices(d, f"layers.{l}.ff1", [sl(f"layers.{l}.ff1.weight"), sl(f"layers.{l}.ff1.bias")], "layer")
        h = module(d, "layers.2.attn.head1")
        check(h["params"] == 3 * (256 * 64 + 64) + 64 * 256, "bert: head parameter count")
        check(h["fwd_flops"] == 4 * gemm(128, 256, 64), f"bert: head forward FLOPs {h['fwd_flops']}")
        check(h["bwd_flops"] == 2 * h["fwd_flops"], "bert: head backward FLOPs")
        check(len(h["sites"]) == 4, "bert: a head has 4 sites")
        q, o = h["sites"][0], h["sites"][3]
        check(q == {"node": "/layers.2/attn/q/MatMul", "weight": 0, "bias": 1, "slice_out": 1, "begin": 64, "end": 128,
                    "stacked": 0}, f"bert: q site {q}")
        check(o == {"node": "/layers.2/attn/o/MatMul", "weight": 6, "bias": -1, "slice_out": 0, "begin": 64,
                    "end": 128, "stacked": 0}, f"bert: o site {o}")
    elif name == "switch-mini":
        expect_modules(d, name, layer=2, head=8, expert=8)
        for b in range(2):
            for e in range(4):
                p = f"blocks.{b}.moe.experts.{e}."
                expect_slices(d, f"blocks.{b}.moe.experts.{e}",
                              [sl(p + "fc1.weight"), sl(p + "fc1.bias"), sl(p + "fc2.weight"), sl(p + "fc2.bias")],
                              "expert")
        expect_slices(d, "blocks.1.attn.head3", [
            sl("blocks.1.attn.q.weight", 1, 96, 128), sl("blocks.1.attn.q.bias", 0, 96, 128),
            sl("blocks.1.attn.k.weight", 1, 96, 128), sl("blocks.1.attn.k.bias", 0, 96, 128),
            sl("blocks.1.attn.v.weight", 1, 96, 128), sl("blocks.1.attn.v.bias", 0, 96, 128),
            sl("blocks.1.attn.o.weight", 0, 96, 128)], "head")
        expect_slices(d, "blocks.0.moe.router", [sl("blocks.0.moe.router.weight"), sl("blocks.0.moe.router.bias")])
        f = inspect(name, "--freeze", "blocks.0.attn.causal_mask,blocks.1.attn.causal_mask")
        check(f["module_totals"]["params_not_trained"] == 2 * 64 * 64, "switch-mini: --freeze masks")
    elif name == "gpt-tiny":
        expect_modules(d, name, layer=4, head=4)
        for b, (wqkv, wo) in enumerate([("onnx::MatMul_303", "onnx::MatMul_307"), ("onnx::MatMul_310", "onnx::MatMul_314")]):
            bias = f"transformer.h.{b}.attn.c_attn.bias"
            for h in range(2):
                s = []
                for part in range(3):
                    a = 32 * part + 16 * h
                    s += [sl(wqkv, 1, a, a + 16), sl(bias, 0, a, a + 16)]
                s.append(sl(wo, 0, 16 * h, 16 * h + 16))
                expect_slices(d, f"transformer.h.{b}.attn.head{h}", s, "head")
        h = module(d, "transformer.h.0.attn.head1")
        check([(x["weight"], x["bias"], x["slice_out"], x["begin"], x["end"]) for x in h["sites"]] ==
              [(0, 1, 1, 16, 32), (2, 3, 1, 48, 64), (4, 5, 1, 80, 96), (6, -1, 0, 16, 32)],
              f"gpt-tiny: fused QKV sites {h['sites']}")
        expect_slices(d, "transformer.h.1.mlp.c_fc", [sl("onnx::MatMul_315"), sl("transformer.h.1.mlp.c_fc.bias")])
    elif name == "vit-tiny":
        expect_modules(d, name, layer=5, head=4)
        for b, w in enumerate(["onnx::MatMul_347", "onnx::MatMul_350"]):
            p = f"encoder.layers.{b}.self_attn."
            for h in range(2):
                s = []
                for part in range(3):
                    a = 32 * part + 16 * h
                    s += [sl(w, 1, a, a + 16), sl(p + "in_proj_bias", 0, a, a + 16)]
                s.append(sl(p + "out_proj.weight", 1, 16 * h, 16 * h + 16))   # Gemm transB=1: [out, in]
                expect_slices(d, p + f"head{h}", s, "head")
        expect_slices(d, "patch_embed", [sl("patch_embed.weight"), sl("patch_embed.bias")], "layer")
        pe = module(d, "patch_embed")
        check(pe["fwd_flops"] == gemm(16, 3 * 16, 32) and pe["bwd_flops"] == pe["fwd_flops"], "vit: conv FLOPs")
    elif name == "switch-tiny":
        expect_modules(d, name, layer=1, expert=4)
        for e in range(4):
            w1, w2 = f"onnx::MatMul_{94 + 2 * e}", f"onnx::MatMul_{95 + 2 * e}"
            expect_slices(d, f"experts.{e}", [sl(w1), sl(f"experts.{e}.0.bias"), sl(w2), sl(f"experts.{e}.2.bias")],
                          "expert")
        expect_slices(d, "router", [sl("onnx::MatMul_93"), sl("router.bias")], "layer")
    elif name == "resnet-tiny":
        expect_modules(d, name, layer=9)
        expect_slices(d, "layer2.downsample.0", [sl("layer2.downsample.0.weight")], "layer")
        check(d["module_totals"]["params_not_trained"] == 2 * 336, "resnet: BN statistics")
        c = module(d, "layer3.conv2")
        check(c["fwd_flops"] == gemm(16, 64 * 9, 64), f"resnet: layer3.conv2 FLOPs {c['fwd_flops']}")
    elif name == "moe-stacked":
        expect_modules(d, name, layer=1, expert=4)
        for e in range(4):
            expect_slices(d, f"moe.expert{e}", [sl("moe.experts_w1", 0, e, e + 1), sl("moe.experts_b1", 0, e, e + 1),
                                                sl("moe.experts_w2", 0, e, e + 1), sl("moe.experts_b2", 0, e, e + 1)],
                          "expert")
        x = module(d, "moe.expert2")
        check([(s["node"], s["weight"], s["bias"], s["begin"], s["end"], s["stacked"]) for s in x["sites"]] ==
              [("/moe/w1/MatMul", 0, 1, 2, 3, 1), ("/moe/w2/MatMul", 2, 3, 2, 3, 1)], f"moe-stacked: sites {x['sites']}")
        # w1 reads the data (weight gradient only), w2 also passes the gradient down
        check(x["fwd_flops"] == gemm(8, 16, 32) * 2 and x["bwd_flops"] == gemm(8, 16, 32) * 3,
              f"moe-stacked: FLOPs {x['fwd_flops']} {x['bwd_flops']}")
    else:
        sys.exit(f"unknown case {name}")


def run_file_cases():
    tmp = tempfile.mkdtemp()

    def write(name, text):
        p = os.path.join(tmp, name)
        with open(p, "w") as f:
            f.write(text)
        return p

    def ok(label, model, text, *args):
        p = write(label + ".json", text if isinstance(text, str) else json.dumps(text))
        d = inspect(model, "--partition", p, *args)
        invariants(d, label)
        return d

    def bad(label, model, text, *pats, args=()):
        p = write(label + ".json", text if isinstance(text, str) else json.dumps(text))
        r = subprocess.run([matc, "inspect", MODELS[model], "--partition", p, *args], capture_output=True, text=True)
        out = r.stdout + r.stderr
        check(r.returncode == 1, f"{label}: exit {r.returncode}, want 1 ({out.strip()})")
        for pat in (p,) + pats:
            check(pat in out, f"{label}: message lacks '{pat}': {out.strip()}")
        for crash in ["internal error", "Segmentation", "AddressSanitizer", "runtime error"]:
            check(crash not in out, f"{label}: crash ({crash})")
        if not failures:
            print("ok  ", label, "->", out.strip().splitlines()[-1] if out.strip() else "")

    half = {"name": "fc1", "kind": "layer", "slices": [sl("fc1.weight", 0, 0, 128), sl("fc1.bias", 0, 0, 128)]}
    d = ok("override", "mlp", {"modules": [half]})
    check(len(d["modules"]) == 2, "override: still 2 modules")
    m = module(d, "fc1")
    check(m["params"] == 128 * 784 + 128, "override: fc1 is half the layer")
    check(m["sites"] == [{"node": "/fc1/Gemm", "weight": 0, "bias": 1, "slice_out": 1, "begin": 0, "end": 128,
                          "stacked": 0}], f"override: site {m['sites']}")
    check(m["fwd_flops"] == gemm(1, 784, 128), "override: FLOPs of half fc1")
    check(d["module_totals"]["params_always_on"] == 2570 + 128 * 784 + 128, "override: the other half is always on")

    d = ok("add", "mlp", [{"name": "classifier", "slices": [{"param": "fc3.weight"}, {"param": "fc3.bias"}]}])
    check([m["name"] for m in d["modules"]] == ["fc1", "fc2", "classifier"], "add: appended")
    check(module(d, "classifier")["kind"] == "other", "add: kind defaults to other")
    check(d["module_totals"]["params_always_on"] == 0, "add: nothing always on")

    d = ok("replace", "mlp", {"replace": True, "modules": [
        {"name": "in-rows", "kind": "layer", "slices": [sl("fc2.weight", 1, 0, 100)]}]})
    check([m["name"] for m in d["modules"]] == ["in-rows"], "replace: only the file's modules")
    check(module(d, "in-rows")["sites"] == [{"node": "/fc2/Gemm", "weight": 0, "bias": -1, "slice_out": 0,
                                             "begin": 0, "end": 100, "stacked": 0}], "replace: input-feature site")

    # a head merged differently: override one bert head by name with fewer slices
    d = ok("override-head", "bert-mini", [{"name": "layers.0.attn.head0", "kind": "head", "slices": [
        sl("layers.0.attn.q.weight", 1, 0, 64), sl("layers.0.attn.q.bias", 0, 0, 64)]}])
    check(module(d, "layers.0.attn.head0")["params"] == 256 * 64 + 64, "override-head: size")
    check(len(d["modules"]) == 25, "override-head: count")

    # input channels of a convolution: a site on x's channels
    d = ok("conv-in-channels", "vgg-small", {"replace": True, "modules": [
        {"name": "c3in", "kind": "layer", "slices": [sl("features.3.weight", 1, 0, 16)]}]})
    c = module(d, "c3in")
    check(c["sites"] == [{"node": "/features/features.3/Conv", "weight": 0, "bias": -1, "slice_out": 0, "begin": 0,
                          "end": 16, "stacked": 0}], f"conv-in-channels: site {c['sites']}")
    check(c["params"] == 32 * 16 * 9 and c["fwd_flops"] == gemm(28 * 28, 16 * 9, 32), "conv-in-channels: size, FLOPs")

    # a slice along no feature axis of a site: no site (per-sample gradients)
    d = ok("no-site", "bert-mini", {"replace": True, "modules": [{"name": "emb", "slices": [sl("tok_emb.weight", 0, 0, 10)]}]})
    check(module(d, "emb")["sites"] == [], "no-site: the embedding has no site")

    mod = lambda *slices: {"modules": [{"name": "m1", "slices": list(slices)}]}
    bad("unknown-initializer", "mlp", mod(sl("nope.weight")), "module 'm1'", "unknown initializer 'nope.weight'")
    bad("overlap-in-module", "mlp", {"replace": True, "modules": [{"name": "m1", "slices": [
        sl("fc1.weight", 0, 0, 10), sl("fc1.weight", 0, 5, 20)]}]}, "module 'm1'", "overlapping slices")
    bad("overlap-across-axes", "mlp", {"replace": True, "modules": [{"name": "m1", "slices": [
        sl("fc1.weight", 0, 0, 10), sl("fc1.weight", 1, 0, 10)]}]}, "module 'm1'", "overlapping slices")
    bad("overlap-between-modules", "mlp", {"replace": True, "modules": [
        {"name": "a", "slices": [sl("fc1.weight", 0, 0, 10)]},
        {"name": "m1", "slices": [sl("fc1.weight")]}]}, "module 'm1'", "overlapping slices", "module 'a'")
    bad("overlap-automatic", "mlp", mod(sl("fc2.bias")), "module 'm1'", "overlapping slices", "module 'fc2'",
        "automatic")
    bad("out-of-range", "mlp", mod(sl("fc3.weight", 0, 5, 11)), "module 'm1'", "out of range", "axis 0 has 10")
    bad("huge-number", "mlp", '{"modules": [{"name": "m1", "slices": [{"param": "fc3.bias", "axis": 0, "end": 1e300}]}]}',
        "module 'm1'", '"end" must be an integer')
    bad("deep-json", "mlp", "[" * 200 + "]" * 200, "malformed JSON", "nested deeper")
    bad("empty-range", "mlp", mod(sl("fc3.weight", 1, 7, 7)), "module 'm1'", "out of range")
    bad("axis-out-of-range", "mlp", mod(sl("fc3.weight", 2, 0, 1)), "module 'm1'", "axis 2 out of range")
    bad("non-float", "switch-mini", mod(sl("blocks.0.moe.expert_ids")), "module 'm1'", "int64, not float")
    bad("bn-statistic", "vgg-small", mod(sl("features.1.running_mean")), "module 'm1'", "does not train")
    bad("frozen", "mlp", mod(sl("fc3.bias")), "module 'm1'", "does not train", args=("--freeze", "fc3.bias"))
    bad("malformed-json", "mlp", '{"modules": [{"name": "m1" "slices": []}]}', "malformed JSON", "line 1")
    bad("truncated-json", "mlp", '{"modules": [\n{"name": "m1",', "malformed JSON", "line 2")
    bad("trailing-text", "mlp", '[] x', "malformed JSON")
    bad("unknown-kind", "mlp", {"modules": [{"name": "m1", "kind": "filter", "slices": [sl("fc3.bias")]}]},
        "module 'm1'", '"kind"')
    bad("unknown-key", "mlp", {"modules": [{"name": "m1", "slcies": []}]}, "module 'm1'", 'unknown key "slcies"')
    bad("no-slices", "mlp", {"modules": [{"name": "m1", "slices": []}]}, "module 'm1'", '"slices"')
    bad("no-name", "mlp", {"modules": [{"slices": [sl("fc3.bias")]}]}, "module '#1'", '"name"')
    bad("twice", "mlp", [{"name": "m1", "slices": [sl("fc3.bias")]}, {"name": "m1", "slices": [sl("fc3.weight")]}],
        "module 'm1'", "defined twice")
    missing = os.path.join(tmp, "missing.json")
    r = subprocess.run([matc, "inspect", MODELS["mlp"], "--partition", missing], capture_output=True, text=True)
    check(r.returncode == 1 and missing in r.stderr and "cannot read" in r.stderr, f"missing file: {r.stderr}")
    shutil.rmtree(tmp)


def run_dot():
    for name in ["bert-mini", "gpt-tiny", "vgg-small"]:
        d = inspect(name)
        r = subprocess.run([matc, "inspect", MODELS[name], "--dot"], capture_output=True, text=True)
        check(r.returncode == 0, f"{name} --dot: exit {r.returncode}")
        check(r.stdout.startswith("digraph") and r.stdout.count("subgraph cluster_") == len(d["modules"]),
              f"{name} --dot: one cluster per module")
        check(r.stdout.count("{") == r.stdout.count("}"), f"{name} --dot: braces")
        if shutil.which("dot"):
            g = subprocess.run(["dot", "-Tsvg"], input=r.stdout, capture_output=True, text=True)
            check(g.returncode == 0, f"{name}: dot rejects the output: {g.stderr[:500]}")
    if not failures and not shutil.which("dot"):
        print("dot is not installed: structure checked, Graphviz not run")
        sys.exit(77)


if case == "file":
    run_file_cases()
elif case == "dot":
    run_dot()
else:
    run_model(case)
if failures:
    print(f"{len(failures)} checks failed")
    sys.exit(1)
print("ok")
