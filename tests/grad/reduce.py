#!/usr/bin/python3
"""Gradient-check cases for the reduction family (Reduce*, Softmax,
LogSoftmax, CumSum, TopK), the losses (NegativeLogLikelihoodLoss,
SoftmaxCrossEntropyLoss) and Einsum.

Writes tests/grad/reduce/<case>/model.onnx and test_data_set_0/ (integer
loss targets as input_0.pb). Differentiable inputs are initializers, so
`matc gradcheck --fd` checks them. Values avoid kinks: no x near 0 for
ReduceL1, distinct values for ReduceMax/Min and TopK (a tie is not
differentiable), positive x for ReduceLogSum. Run: /usr/bin/python3
tests/grad/reduce.py
"""
import os
import shutil

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "reduce")
rng = np.random.default_rng(20240517)


def floats(*shape, lo=-1.0, hi=1.0):
    return rng.uniform(lo, hi, size=shape).astype(np.float32)


def away_from_zero(*shape):
    x = floats(*shape, lo=0.3, hi=1.5)
    return (x * rng.choice([-1, 1], size=shape)).astype(np.float32)


def distinct(*shape):
    """Distinct values spaced 0.1 apart, shuffled: no max/min ties."""
    n = int(np.prod(shape))
    return (rng.permutation(n) * 0.1 - n * 0.05).reshape(shape).astype(np.float32)


def numeric_grads(ref, inits, cots):
    """Central differences in float64 of sum_i <ref(v)[i], cot_i> for every
    element of every float initializer: the full reference gradient."""
    v = {n: a.astype(np.float64) if a.dtype == np.float32 else a for n, a in inits.items()}
    obj = lambda: sum(float(np.sum(np.asarray(y) * c)) for y, c in zip(ref(v), cots))
    grads = {}
    for n, a in v.items():
        if a.dtype != np.float64:
            continue
        g = np.zeros_like(a)
        for k in np.ndindex(a.shape):
            w0 = a[k]
            h = 1e-6 * max(1.0, abs(w0))
            a[k] = w0 + h
            fp = obj()
            a[k] = w0 - h
            fm = obj()
            a[k] = w0
            g[k] = (fp - fm) / (2 * h)
        grads[n] = g
    return grads


def write(case, nodes, inits, outputs, inputs=(), opset=17, out_shapes=None, ref=None):
    """inits: name -> array (float ones are checked); inputs: (name, array).
    Each output gets a pseudo-random cotangent_<i>.pb; with ref (a numpy
    forward: dict of float64 initializers and inputs -> outputs) every
    float initializer also gets a full reference gradient grad_<j>.pb, so
    gradcheck compares all elements, not only its finite-difference
    samples (sparse gradients such as ReduceMax's would hide there)."""
    d = os.path.join(OUT, case)
    shutil.rmtree(d, ignore_errors=True)
    os.makedirs(os.path.join(d, "test_data_set_0"))
    ins = [helper.make_tensor_value_info(n, onnx.mapping.NP_TYPE_TO_TENSOR_TYPE[a.dtype], a.shape)
           for n, a in inputs]
    outs = [helper.make_tensor_value_info(o, TensorProto.FLOAT, None) for o in outputs]
    g = helper.make_graph(nodes, case, ins, outs,
                          [numpy_helper.from_array(a, n) for n, a in inits.items()])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)],
                          producer_name="tests/grad/reduce.py")
    m.ir_version = 8
    if opset <= onnx.defs.onnx_opset_version():   # this onnx may predate the opset
        m = onnx.shape_inference.infer_shapes(m, strict_mode=True)  # fills output shapes
        onnx.checker.check_model(m)
        out_shapes = out_shapes or [[d.dim_value for d in o.type.tensor_type.shape.dim] for o in m.graph.output]
    onnx.save(m, os.path.join(d, "model.onnx"))
    for i, (n, a) in enumerate(inputs):
        t = numpy_helper.from_array(a, n)
        with open(os.path.join(d, "test_data_set_0", "input_%d.pb" % i), "wb") as f:
            f.write(t.SerializeToString())
    cots = []
    for i, shape in enumerate(out_shapes):
        cots.append(np.asarray(rng.standard_normal(shape), np.float32))
        t = numpy_helper.from_array(cots[-1], "cotangent_%d" % i)
        with open(os.path.join(d, "test_data_set_0", "cotangent_%d.pb" % i), "wb") as f:
            f.write(t.SerializeToString())
    if ref is None:
        return
    allv = dict(inits)
    allv.update(dict(inputs))
    for j, (n, gr) in enumerate(numeric_grads(ref, allv, cots).items()):
        t = numpy_helper.from_array(gr.astype(np.float32), n)
        with open(os.path.join(d, "test_data_set_0", "grad_%d.pb" % j), "wb") as f:
            f.write(t.SerializeToString())


# ------------------------------------------------------------ Reduce*
def reduce_case(case, op, x, axes=None, keepdims=1, opset=17, out_shape=None, **attrs):
    inits = {"x": x}
    ins = ["x"]
    axes_input = op == "ReduceSum" and opset >= 13 or opset >= 18
    if axes is not None:
        if axes_input:
            inits["axes"] = np.array(axes, np.int64)
            ins.append("axes")
        else:
            attrs["axes"] = axes
    ax = None if axes is None else tuple(axes)
    noop = axes is None and attrs.get("noop_with_empty_axes", 0)
    f = {"ReduceSum": np.sum, "ReduceMean": np.mean, "ReduceMax": np.max, "ReduceMin": np.min,
         "ReduceProd": np.prod,
         "ReduceSumSquare": lambda a, **k: np.sum(a * a, **k),
         "ReduceL1": lambda a, **k: np.sum(np.abs(a), **k),
         "ReduceL2": lambda a, **k: np.sqrt(np.sum(a * a, **k)),
         "ReduceLogSum": lambda a, **k: np.log(np.sum(a, **k)),
         "ReduceLogSumExp": lambda a, **k: np.log(np.sum(np.exp(a), **k))}[op]
    ref = lambda v: [v["x"] if noop else f(v["x"], axis=ax, keepdims=bool(keepdims))]
    write(case, [helper.make_node(op, ins, ["y"], keepdims=keepdims, **attrs)], inits, ["y"], opset=opset,
          out_shapes=[out_shape] if out_shape else None, ref=ref)


reduce_case("sum_axis1_keep", "ReduceSum", floats(3, 4, 5), [1])
reduce_case("sum_neg_axes_nokeep", "ReduceSum", floats(3, 4, 5), [-1, 0], keepdims=0)
reduce_case("sum_all_nokeep", "ReduceSum", floats(3, 4), None, keepdims=0)
reduce_case("sum_opset11_attr", "ReduceSum", floats(2, 3, 4), [-2], keepdims=0, opset=11)
reduce_case("sum_noop_empty_axes", "ReduceSum", floats(2, 3), None, noop_with_empty_axes=1)
reduce_case("mean_axes02_keep", "ReduceMean", floats(3, 4, 5), [0, 2])
reduce_case("mean_neg_nokeep", "ReduceMean", floats(3, 4, 5), [-2], keepdims=0)
reduce_case("mean_opset18_input", "ReduceMean", floats(3, 4), [1], keepdims=0, opset=18, out_shape=[3])
reduce_case("sumsquare_axis1_nokeep", "ReduceSumSquare", floats(3, 4, 2), [1], keepdims=0)
reduce_case("sumsquare_all_keep", "ReduceSumSquare", floats(3, 4), None)
reduce_case("l1_axis1_keep", "ReduceL1", away_from_zero(3, 4, 2), [1])
reduce_case("l1_neg_nokeep", "ReduceL1", away_from_zero(3, 4, 2), [-1, 0], keepdims=0)
reduce_case("l2_axis2_nokeep", "ReduceL2", floats(3, 4, 5), [2], keepdims=0)
reduce_case("l2_axes01_keep", "ReduceL2", floats(3, 4, 5), [0, 1])
reduce_case("logsumexp_axis1_keep", "ReduceLogSumExp", floats(3, 4, 5, lo=-3, hi=3), [1])
reduce_case("logsumexp_neg_nokeep", "ReduceLogSumExp", floats(3, 4, 5, lo=-3, hi=3), [-1], keepdims=0)
reduce_case("logsum_axis0", "ReduceLogSum", floats(3, 4, lo=0.5, hi=2), [0], keepdims=0)
reduce_case("prod_axis1", "ReduceProd", away_from_zero(3, 4), [1])
reduce_case("max_axis1_nokeep", "ReduceMax", distinct(3, 4, 5), [1], keepdims=0)
reduce_case("max_neg_keep", "ReduceMax", distinct(3, 4, 5), [-1])
reduce_case("max_all_nokeep", "ReduceMax", distinct(4, 5), None, keepdims=0)
reduce_case("min_axis0_keep", "ReduceMin", distinct(3, 4, 5), [0])
reduce_case("min_axes_neg_nokeep", "ReduceMin", distinct(3, 4, 5), [-1, -3], keepdims=0)


# ------------------------------------------------------------ Softmax family
def softmax_case(case, op, shape, axis=None, opset=17):
    attrs = {} if axis is None else {"axis": axis}
    x = floats(*shape, lo=-2, hi=2)

    def ref(v):
        a = v["x"]
        ax = (1 if opset < 13 else -1) if axis is None else axis
        ax = ax + a.ndim if ax < 0 else ax
        # before opset 13: softmax over everything from axis on
        b = a.reshape(a.shape[:ax] + (-1,)) if opset < 13 else a
        k = b.ndim - 1 if opset < 13 else ax
        e = b - np.log(np.sum(np.exp(b), axis=k, keepdims=True))
        return [(e if op == "LogSoftmax" else np.exp(e)).reshape(a.shape)]
    write(case, [helper.make_node(op, ["x"], ["y"], **attrs)], {"x": x}, ["y"], opset=opset, ref=ref)


for op, p in (("Softmax", "softmax"), ("LogSoftmax", "logsoftmax")):
    softmax_case(p + "_default", op, (3, 4, 5))
    softmax_case(p + "_axis0", op, (3, 4, 5), 0)
    softmax_case(p + "_axis1", op, (3, 4, 5), 1)
    softmax_case(p + "_neg2", op, (3, 4, 5), -2)
    # before opset 13: x flattened to 2-D at axis, softmax over the tail
    softmax_case(p + "_opset11_default", op, (3, 4, 5), opset=11)
    softmax_case(p + "_opset11_axis2", op, (2, 3, 4, 2), 2, opset=11)
    softmax_case(p + "_opset11_neg3", op, (2, 3, 4, 2), -3, opset=11)
    softmax_case(p + "_opset11_axis0", op, (3, 4), 0, opset=11)


# ------------------------------------------------------------ CumSum, TopK
def cumsum_case(case, axis, **attrs):
    inits = {"x": floats(3, 4, 5), "axis": np.array(axis, np.int64)}

    def ref(v):
        a = v["x"]
        if attrs.get("reverse"):
            a = np.flip(a, axis)
        y = np.cumsum(a, axis)
        if attrs.get("exclusive"):
            y = y - a
        return [np.flip(y, axis) if attrs.get("reverse") else y]
    write(case, [helper.make_node("CumSum", ["x", "axis"], ["y"], **attrs)], inits, ["y"], ref=ref)


cumsum_case("cumsum_axis0", 0)
cumsum_case("cumsum_neg_exclusive", -1, exclusive=1)
cumsum_case("cumsum_axis1_reverse", 1, reverse=1)
cumsum_case("cumsum_reverse_exclusive", 2, reverse=1, exclusive=1)


def topk_case(case, shape, k, axis=-1, largest=1):
    inits = {"x": distinct(*shape), "k": np.array([k], np.int64)}
    node = helper.make_node("TopK", ["x", "k"], ["v", "i"], axis=axis, largest=largest)

    def ref(v):
        a = v["x"]
        i = np.argsort(-a if largest else a, axis=axis, kind="stable")
        return [np.take_along_axis(a, np.take(i, range(k), axis=axis), axis=axis)]
    write(case, [node, helper.make_node("Identity", ["v"], ["y"])], inits, ["y"], ref=ref)


topk_case("topk_last", (3, 6), 2)
topk_case("topk_axis0_smallest", (5, 3, 2), 3, axis=0, largest=0)


# ------------------------------------------------------------ losses
def loss_case(case, op, shape, reduction="mean", ignore_index=None, weight=False,
              tdtype=np.int64, log_prob=False):
    N, C = shape[0], shape[1]
    t = rng.integers(0, C, size=(N,) + tuple(shape[2:])).astype(tdtype)
    attrs = {"reduction": reduction}
    if ignore_index is not None:
        attrs["ignore_index"] = ignore_index
        flat = t.reshape(-1)
        flat[::3] = ignore_index            # a third of the elements ignored
    inits = {"x": floats(*shape, lo=-2, hi=2)}
    ins = ["x", "target"]
    if weight:
        inits["w"] = floats(C, lo=0.3, hi=2)
        ins.append("w")
    outs = ["loss", "log_prob"] if log_prob else ["loss"]
    node = helper.make_node(op, ins, outs, **attrs)

    def ref(v):
        x = v["x"]
        lp = x - np.log(np.sum(np.exp(x), axis=1, keepdims=True)) if op != "NegativeLogLikelihoodLoss" else x
        tt = v["target"].astype(np.int64)
        valid = tt != ignore_index if ignore_index is not None else np.ones(tt.shape, bool)
        tc = np.where(valid, tt, 0)
        w = v["w"][tc] if weight else np.ones(tt.shape)
        w = np.where(valid, w, 0.0)
        picked = np.take_along_axis(lp, tc[:, None], axis=1)[:, 0]
        l = -picked * w
        loss = {"none": l, "sum": np.sum(l), "mean": np.sum(l) / np.sum(w)}[reduction]
        return [loss, lp] if log_prob else [loss]
    write(case, [node], inits, outs, inputs=[("target", t)], ref=ref)


for op, p in (("NegativeLogLikelihoodLoss", "nll"), ("SoftmaxCrossEntropyLoss", "sce")):
    loss_case(p + "_mean", op, (5, 4))
    loss_case(p + "_sum", op, (5, 4), "sum")
    loss_case(p + "_none", op, (5, 4), "none")
    loss_case(p + "_mean_weight", op, (5, 4), weight=True)
    loss_case(p + "_mean_ignore", op, (6, 4), ignore_index=1)
    loss_case(p + "_mean_ignore_weight_3d", op, (3, 4, 5, 2), ignore_index=2, weight=True)
    loss_case(p + "_sum_ignore_outside", op, (6, 4), "sum", ignore_index=-1)
    loss_case(p + "_none_weight_3d_i32", op, (2, 3, 4), "none", weight=True, tdtype=np.int32)
    loss_case(p + "_sum_weight_ignore", op, (6, 5), "sum", ignore_index=0, weight=True)
loss_case("sce_mean_log_prob", "SoftmaxCrossEntropyLoss", (4, 5, 3), log_prob=True)
loss_case("sce_none_weight_ignore_log_prob", "SoftmaxCrossEntropyLoss", (6, 3), "none",
          ignore_index=1, weight=True, log_prob=True)


# ------------------------------------------------------------ Einsum
def einsum_case(case, eq, *shapes):
    names = ["a", "b", "c"][:len(shapes)]
    inits = {n: floats(*s) for n, s in zip(names, shapes)}
    # this onnx's shape inference gives Einsum only a rank: numpy's shape
    y = np.einsum(eq, *inits.values())
    write(case, [helper.make_node("Einsum", names, ["y"], equation=eq)], inits, ["y"],
          out_shapes=[list(y.shape)], ref=lambda v: [np.einsum(eq, *[v[n] for n in names])])


einsum_case("einsum_matmul", "ij,jk->ik", (3, 4), (4, 5))
einsum_case("einsum_matmul_bt", "ij,kj->ik", (3, 4), (5, 4))
einsum_case("einsum_batched", "bij,bjk->bik", (2, 3, 4), (2, 4, 5))
einsum_case("einsum_batch_broadcast", "bij,bjk->bik", (1, 3, 4), (3, 4, 2))
einsum_case("einsum_ellipsis", "...ij,...jk->...ik", (2, 3, 4), (2, 4, 2))
einsum_case("einsum_matvec", "ij,j->i", (3, 4), (4,))
einsum_case("einsum_dot_implicit", "i,i", (6,), (6,))
einsum_case("einsum_outer_permuted", "i,j->ji", (3,), (4,))
einsum_case("einsum_summed_alone", "bij,jk->bk", (2, 3, 4), (4, 5))
einsum_case("einsum_transpose", "ijk->kij", (2, 3, 4))
einsum_case("einsum_sum", "ij->i", (3, 4))
einsum_case("einsum_three", "ij,jk,kl->il", (2, 3), (3, 4), (4, 2))
