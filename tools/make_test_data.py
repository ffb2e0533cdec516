#!/usr/bin/python3
"""Writes the small test models and data under tests/data: the malformed
models and data that tests/bad_inputs.sh feeds to matc (bad/), a chain
of elementwise ops for the fusion test (fusion/) and a Winograd conv for
the joined-kernel test (join/). Developer tool (needs
python3-onnx); the outputs are committed.

usage: tools/make_test_data.py [OUTDIR]   (default tests/data)
"""
import os
import sys

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

root = sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(__file__), "..", "tests", "data")
out = os.path.join(root, "bad")
os.makedirs(out, exist_ok=True)


def save(model, name):
    onnx.save(model, os.path.join(out, name))


def tensor(path, arr, name):
    with open(path, "wb") as f:
        f.write(numpy_helper.from_array(arr, name).SerializeToString())


x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4])
y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 3])
w = numpy_helper.from_array(np.ones((4, 3), np.float32), "w")

# A good model: y = x @ w. The base for the broken ones and for the data tests.
good = helper.make_model(
    helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["y"], name="mm")], "g", [x], [y], [w]),
    opset_imports=[helper.make_opsetid("", 13)])
save(good, "good.onnx")

# An op no ONNX opset has.
unknown = helper.make_model(
    helper.make_graph([helper.make_node("FrobnicateTensor", ["x"], ["y"], name="frob")], "g", [x], [y]),
    opset_imports=[helper.make_opsetid("", 13)])
save(unknown, "unknown_op.onnx")

# A node input that nothing produces (the initializer was dropped).
missing = helper.make_model(
    helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["y"], name="mm")], "g", [x], [y]),
    opset_imports=[helper.make_opsetid("", 13)])
save(missing, "missing_initializer.onnx")

# Inner dimensions that do not match (4 vs 5).
w5 = numpy_helper.from_array(np.ones((5, 3), np.float32), "w")
mismatch = helper.make_model(
    helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["y"], name="mm")], "g", [x], [y], [w5]),
    opset_imports=[helper.make_opsetid("", 13)])
save(mismatch, "shape_mismatch.onnx")

# Input data of the wrong shape and of the wrong dtype for good.onnx.
for name, arr in [("wrong_shape", np.ones((2, 5), np.float32)),
                  ("wrong_dtype", np.ones((2, 4), np.int64)),
                  ("good_data", np.ones((2, 4), np.float32))]:
    d = os.path.join(out, name)
    os.makedirs(d, exist_ok=True)
    tensor(os.path.join(d, "input_0.pb"), arr, "x")
# Gradient checks on bad references: y = Einsum("ij,jj->ij", x @ w, d) has
# no gradient for d (a repeated subscript: a diagonal); and reference files
# for good.onnx whose grad names an unknown initializer or has the wrong
# shape.
dmat = numpy_helper.from_array(np.eye(3, dtype=np.float32) * 2, "d")
nograd = helper.make_model(
    helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["h"], name="mm"),
                       helper.make_node("Einsum", ["h", "d"], ["y"], name="diag", equation="ij,jj->ij")],
                      "g", [x], [y], [w, dmat]),
    opset_imports=[helper.make_opsetid("", 13)])
save(nograd, "no_grad_rule.onnx")
for name, gname, garr in [("bad_grad_diag", "d", np.ones((3, 3), np.float32)),
                          ("bad_grad_name", "nope", np.ones((4, 3), np.float32)),
                          ("bad_grad_shape", "w", np.ones((3, 4), np.float32)),
                          ("grad_data", "w", np.full((4, 3), 2.0, np.float32))]:
    d = os.path.join(out, name)
    os.makedirs(d, exist_ok=True)
    tensor(os.path.join(d, "input_0.pb"), np.ones((2, 4), np.float32), "x")
    tensor(os.path.join(d, "cotangent_0.pb"), np.ones((2, 3), np.float32), "y")
    tensor(os.path.join(d, "grad_0.pb"), garr, gname)

# Training-mode Dropout. Keep rate: the mean of the mask of 20000 elements
# at ratio 0.3 must be 0.7 (binomial standard deviation 0.0032; the test
# allows 0.02, six of them). Gradient: Dropout(w) with a fixed seed is
# differentiable and gradcheck --fd must agree (tests/grad/dropout).
dx = helper.make_tensor_value_info("x", TensorProto.FLOAT, [20000])
dm = helper.make_tensor_value_info("rate", TensorProto.FLOAT, [])
ratio = numpy_helper.from_array(np.array(0.3, np.float32), "ratio")
train = numpy_helper.from_array(np.array(True), "training")
rate = helper.make_model(helper.make_graph([
    helper.make_node("Dropout", ["x", "ratio", "training"], ["y", "mask"], name="dropout", seed=5),
    helper.make_node("Cast", ["mask"], ["maskf"], to=TensorProto.FLOAT),
    helper.make_node("ReduceMean", ["maskf"], ["rate"], keepdims=0)],
    "dropout_rate", [dx], [dm], [ratio, train]), opset_imports=[helper.make_opsetid("", 13)])
rdir = os.path.join(root, "dropout_rate")
os.makedirs(os.path.join(rdir, "test_data_set_0"), exist_ok=True)
onnx.save(rate, os.path.join(rdir, "model.onnx"))
tensor(os.path.join(rdir, "test_data_set_0", "input_0.pb"), np.ones(20000, np.float32), "x")
tensor(os.path.join(rdir, "test_data_set_0", "output_0.pb"), np.array(0.7, np.float32), "rate")
rng = np.random.default_rng(7)
gy = helper.make_tensor_value_info("y", TensorProto.FLOAT, [6, 7])
wv = numpy_helper.from_array(rng.standard_normal((6, 7)).astype(np.float32) + 0.5, "w")
# The ratio is a Constant node here, not an initializer: it is not a
# parameter, and its (zero) gradient would fail gradcheck's nonzero check.
dgrad = helper.make_model(helper.make_graph([
    helper.make_node("Constant", [], ["ratio_c"], value=numpy_helper.from_array(np.array(0.3, np.float32))),
    helper.make_node("Dropout", ["w", "ratio_c", "training"], ["d"], name="dropout", seed=3),
    helper.make_node("Mul", ["d", "w"], ["y"], name="mul")],
    "dropout_grad", [], [gy], [wv, train]), opset_imports=[helper.make_opsetid("", 13)])
gdir = os.path.join(root, "..", "grad", "dropout", "training")
os.makedirs(os.path.join(gdir, "test_data_set_0"), exist_ok=True)
onnx.save(dgrad, os.path.join(gdir, "model.onnx"))

# Fusion: tanh(x*x + b) then a transpose: one kernel after fusion.
rng = np.random.default_rng(7)
fx = helper.make_tensor_value_info("x", TensorProto.FLOAT, [4, 8, 16])
fy = helper.make_tensor_value_info("y", TensorProto.FLOAT, [16, 4, 8])
b = rng.standard_normal(16).astype(np.float32)
fusion = helper.make_model(helper.make_graph([
    helper.make_node("Mul", ["x", "x"], ["a"], name="mul"),
    helper.make_node("Add", ["a", "b"], ["c"], name="add"),
    helper.make_node("Tanh", ["c"], ["d"], name="tanh"),
    helper.make_node("Transpose", ["d"], ["y"], name="transpose", perm=[2, 0, 1])],
    "fusion", [fx], [fy], [numpy_helper.from_array(b, "b")]),
    opset_imports=[helper.make_opsetid("", 13)])
fdir = os.path.join(root, "fusion")
os.makedirs(os.path.join(fdir, "test_data_set_0"), exist_ok=True)
onnx.save(fusion, os.path.join(fdir, "model.onnx"))
xv = rng.standard_normal((4, 8, 16)).astype(np.float32)
tensor(os.path.join(fdir, "test_data_set_0", "input_0.pb"), xv, "x")
tensor(os.path.join(fdir, "test_data_set_0", "output_0.pb"), np.tanh(xv * xv + b).transpose(2, 0, 1), "y")
# Joined kernels: a 3x3 conv with 16 channels runs as Winograd, whose
# transforms are kernels that code generation joins into one loop nest.
# Odd sizes (7x5) leave partial tiles at the bottom and right edges.
jx = helper.make_tensor_value_info("x", TensorProto.FLOAT, [3, 16, 7, 5])
jy = helper.make_tensor_value_info("y", TensorProto.FLOAT, [3, 16, 7, 5])
jw = rng.standard_normal((16, 16, 3, 3)).astype(np.float32) / 12
jb = rng.standard_normal(16).astype(np.float32)
join = helper.make_model(helper.make_graph([
    helper.make_node("Conv", ["x", "w", "b"], ["y"], name="conv", pads=[1, 1, 1, 1], kernel_shape=[3, 3])],
    "join", [jx], [jy], [numpy_helper.from_array(jw, "w"), numpy_helper.from_array(jb, "b")]),
    opset_imports=[helper.make_opsetid("", 13)])
jdir = os.path.join(root, "join")
os.makedirs(os.path.join(jdir, "test_data_set_0"), exist_ok=True)
onnx.save(join, os.path.join(jdir, "model.onnx"))
xv = rng.standard_normal((3, 16, 7, 5)).astype(np.float32)
xp = np.pad(xv.astype(np.float64), ((0, 0), (0, 0), (1, 1), (1, 1)))
yv = np.zeros((3, 16, 7, 5)) + jb.astype(np.float64)[None, :, None, None]
for i in range(3):
    for j in range(3):
        yv += np.einsum("nchw,mc->nmhw", xp[:, :, i:i + 7, j:j + 5], jw[:, :, i, j].astype(np.float64))
tensor(os.path.join(jdir, "test_data_set_0", "input_0.pb"), xv, "x")
tensor(os.path.join(jdir, "test_data_set_0", "output_0.pb"), yv.astype(np.float32), "y")
print("wrote", root)
