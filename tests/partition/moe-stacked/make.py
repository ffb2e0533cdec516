#!/usr/bin/env python3
"""Makes moe-stacked/model.onnx: a mixture-of-experts FFN whose 4 experts'
weights are stacked [E, K, N] initializers (the layout of fused MoE
kernels), applied densely by batched MatMul to the input broadcast over the
expert axis, then summed with router gates. It tests the partition of
stacked expert weights (slices along axis 0). Needs python3-onnx.

    /usr/bin/python3 tests/partition/moe-stacked/make.py

It also writes test_data_set_0/ (input_0.pb, and output_0.pb computed with
numpy in float64) so the forward pass of the stacked batched MatMul is
checked too.
"""
import os

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

E, T, D, F = 4, 8, 16, 32
rng = np.random.default_rng(7)


def init(name, *shape):
    return numpy_helper.from_array((rng.standard_normal(shape) * 0.1).astype(np.float32), name)


inits = [
    init("moe.router.weight", D, E), init("moe.router.bias", E),
    init("moe.experts_w1", E, D, F), init("moe.experts_b1", E, 1, F),
    init("moe.experts_w2", E, F, D), init("moe.experts_b2", E, 1, D),
    init("head.weight", D, 10),
    numpy_helper.from_array(np.array([1], np.int64), "axes1"),
    numpy_helper.from_array(np.array([0], np.int64), "axes0"),
]
nodes = [
    helper.make_node("MatMul", ["x", "moe.router.weight"], ["r0"], name="/moe/router/MatMul"),
    helper.make_node("Add", ["r0", "moe.router.bias"], ["r1"], name="/moe/router/Add"),
    helper.make_node("Softmax", ["r1"], ["gate"], name="/moe/Softmax", axis=-1),    # [T, E]
    helper.make_node("Unsqueeze", ["x", "axes0"], ["xe"], name="/moe/Unsqueeze"),    # [1, T, D]
    helper.make_node("MatMul", ["xe", "moe.experts_w1"], ["h0"], name="/moe/w1/MatMul"),  # [E, T, F]
    helper.make_node("Add", ["h0", "moe.experts_b1"], ["h1"], name="/moe/w1/Add"),
    helper.make_node("Relu", ["h1"], ["h2"], name="/moe/Relu"),
    helper.make_node("MatMul", ["h2", "moe.experts_w2"], ["y0"], name="/moe/w2/MatMul"),  # [E, T, D]
    helper.make_node("Add", ["y0", "moe.experts_b2"], ["y1"], name="/moe/w2/Add"),
    helper.make_node("Transpose", ["gate"], ["gt"], name="/moe/Transpose", perm=[1, 0]),  # [E, T]
    helper.make_node("Unsqueeze", ["gt", "axes_last"], ["g3"], name="/moe/Unsqueeze_1"),  # [E, T, 1]
    helper.make_node("Mul", ["y1", "g3"], ["y2"], name="/moe/Mul"),
    helper.make_node("ReduceSum", ["y2", "axes0"], ["y3"], name="/moe/ReduceSum", keepdims=0),  # [T, D]
    helper.make_node("MatMul", ["y3", "head.weight"], ["logits"], name="/head/MatMul"),
]
inits.append(numpy_helper.from_array(np.array([2], np.int64), "axes_last"))
graph = helper.make_graph(nodes, "moe-stacked", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [T, D])],
                          [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [T, 10])], inits)
model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], producer_name="make.py")
onnx.checker.check_model(model, full_check=True)
here = os.path.dirname(os.path.abspath(__file__))
onnx.save(model, os.path.join(here, "model.onnx"))

# reference forward pass in float64
w = {t.name: numpy_helper.to_array(t).astype(np.float64) for t in inits}
x = rng.standard_normal((T, D)).astype(np.float32)
r = x.astype(np.float64) @ w["moe.router.weight"] + w["moe.router.bias"]
gate = np.exp(r - r.max(-1, keepdims=True))
gate /= gate.sum(-1, keepdims=True)                                   # [T, E]
h = np.maximum(x[None].astype(np.float64) @ w["moe.experts_w1"] + w["moe.experts_b1"], 0)   # [E, T, F]
y = h @ w["moe.experts_w2"] + w["moe.experts_b2"]                     # [E, T, D]
y = (y * gate.T[:, :, None]).sum(0)                                   # [T, D]
logits = (y @ w["head.weight"]).astype(np.float32)
os.makedirs(os.path.join(here, "test_data_set_0"), exist_ok=True)
for name, arr, fname in [("x", x, "input_0.pb"), ("logits", logits, "output_0.pb")]:
    with open(os.path.join(here, "test_data_set_0", fname), "wb") as f:
        f.write(numpy_helper.from_array(arr, name).SerializeToString())
