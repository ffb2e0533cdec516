#!/usr/bin/python3
"""Writes the per-op gradient cases of the elementwise and linalg families
to tests/grad/elementwise/<case>/: one or a few ops whose differentiable
inputs are initializers, with values away from kinks and domain edges.
CTest runs `matc gradcheck --fd` on each (float64 central differences).

usage: tests/grad/elementwise.py   (needs python3-onnx and numpy)
"""
import os

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "elementwise")
rng = np.random.default_rng(2026)


def uniform(shape, lo, hi):
    return rng.uniform(lo, hi, shape).astype(np.float32)


def away(shape, lo, hi, kinks=(0.0,), gap=0.15):
    """Uniform values at least `gap` from every kink."""
    x = uniform(shape, lo, hi)
    for k in kinks:
        near = np.abs(x - k) < gap
        x[near] = k + np.sign(x[near] - k + 1e-9) * gap * 2
    return x


def case(name, nodes, inits, out_shape, opset=13, consts=()):
    d = os.path.join(OUT, name)
    os.makedirs(os.path.join(d, "test_data_set_0"), exist_ok=True)
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, out_shape)
    tensors = [numpy_helper.from_array(v, k) for k, v in inits.items()]
    tensors += [numpy_helper.from_array(v, k) for k, v in consts]
    g = helper.make_graph(nodes, name, [], [y], tensors)
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)]), os.path.join(d, "model.onnx"))
    cot = rng.standard_normal(out_shape).astype(np.float32)
    with open(os.path.join(d, "test_data_set_0", "cotangent_0.pb"), "wb") as f:
        f.write(numpy_helper.from_array(cot, "y").SerializeToString())


def unary(op, x, **attrs):
    case(op.lower() if not attrs else op.lower() + "_attrs", [helper.make_node(op, ["x"], ["y"], **attrs)],
         {"x": x}, list(x.shape))


S = (3, 4)
unary("Neg", uniform(S, -2, 2))
unary("Exp", uniform(S, -2, 2))
unary("Log", uniform(S, 0.5, 2))
unary("Sqrt", uniform(S, 0.5, 2))
unary("Reciprocal", uniform(S, 0.5, 2))
unary("Tanh", uniform(S, -2, 2))
unary("Sigmoid", uniform(S, -3, 3))
unary("Erf", uniform(S, -2, 2))
unary("Abs", away(S, -2, 2))
unary("Sin", uniform(S, -3, 3))
unary("Cos", uniform(S, -3, 3))
unary("Tan", uniform(S, -1, 1))
unary("Asin", uniform(S, -0.8, 0.8))
unary("Acos", uniform(S, -0.8, 0.8))
unary("Atan", uniform(S, -2, 2))
unary("Sinh", uniform(S, -2, 2))
unary("Cosh", uniform(S, -2, 2))
unary("Asinh", uniform(S, -2, 2))
unary("Acosh", uniform(S, 1.2, 3))
unary("Atanh", uniform(S, -0.8, 0.8))
unary("Softplus", uniform(S, -3, 3))
unary("Softsign", away(S, -2, 2))
unary("Relu", away(S, -2, 2))
unary("LeakyRelu", away(S, -2, 2), alpha=0.1)
unary("Elu", away(S, -2, 2), alpha=0.7)
unary("Selu", away(S, -2, 2))
unary("Celu", away(S, -2, 2), alpha=1.5)
unary("HardSigmoid", away(S, -4, 4, kinks=(-2.5, 2.5)))
unary("HardSwish", away(S, -4, 4, kinks=(-3, 3)))
unary("ThresholdedRelu", away(S, -2, 2, kinks=(0.5,)), alpha=0.5)
unary("Shrink", away(S, -2, 2, kinks=(-0.4, 0.4)), lambd=0.4, bias=0.1)
unary("Identity", uniform(S, -2, 2))
unary("Dropout", uniform(S, -2, 2))

# Clip with constant bounds (opset 13 inputs) and with attributes (opset 6).
case("clip", [helper.make_node("Clip", ["x", "lo", "hi"], ["y"])],
     {"x": away(S, -2, 2, kinks=(-1, 1))}, list(S),
     consts=[("lo", np.array(-1, np.float32)), ("hi", np.array(1, np.float32))])
case("clip_attrs_opset6", [helper.make_node("Clip", ["x"], ["y"], min=-1.0, max=1.0)],
     {"x": away(S, -2, 2, kinks=(-1, 1))}, list(S), opset=6)
case("cast_roundtrip", [helper.make_node("Cast", ["x"], ["h"], to=TensorProto.DOUBLE),
                        helper.make_node("Cast", ["h"], ["y"], to=TensorProto.FLOAT)],
     {"x": uniform(S, -2, 2)}, list(S))

# Binary ops, each with a same-shape and two broadcast variants.
for op in ["Add", "Sub", "Mul", "Div"]:
    lo = 0.5 if op == "Div" else -2
    for tag, bshape in [("same", S), ("row", (4,)), ("col", (3, 1))]:
        case("%s_%s" % (op.lower(), tag), [helper.make_node(op, ["a", "b"], ["y"])],
             {"a": uniform(S, -2, 2), "b": uniform(bshape, lo, 2)}, list(S))
case("pow_both", [helper.make_node("Pow", ["a", "b"], ["y"])],
     {"a": uniform(S, 0.5, 2), "b": uniform((4,), -1.5, 2)}, list(S))
case("pow_square", [helper.make_node("Constant", [], ["two"], value=numpy_helper.from_array(np.array(2, np.float32))),
                    helper.make_node("Pow", ["a", "two"], ["y"])],
     {"a": uniform(S, -2, 2)}, list(S))
case("mod_fmod", [helper.make_node("Mod", ["a", "b"], ["y"], fmod=1)],
     {"a": np.array([[3.3, -2.5, 5.3, 1.1], [-4.3, 2.2, 0.7, -1.4], [6.7, -3.1, 2.5, 4.4]], np.float32),
      "b": np.array([1.5, 1.3, -2.1, 0.9], np.float32)}, list(S))
case("prelu", [helper.make_node("PRelu", ["a", "s"], ["y"])],
     {"a": away(S, -2, 2), "s": uniform((4,), 0.05, 0.5)}, list(S))
case("where", [helper.make_node("Where", ["c", "a", "b"], ["y"])],
     {"a": uniform(S, -2, 2), "b": uniform((4,), -2, 2)}, list(S),
     consts=[("c", rng.uniform(0, 1, S) > 0.5)])

# Variadic ops on three inputs (distinct values: Max/Min have no ties).
for op in ["Max", "Min", "Sum", "Mean"]:
    base = rng.permutation(36).reshape(3, 3, 4).astype(np.float32) * 0.1 - 1.8
    case("%s_3" % op.lower(), [helper.make_node(op, ["a", "b", "c"], ["y"])],
         {"a": base[0], "b": base[1], "c": base[2][0]}, list(S))

# MatMul: 2-D, batched, broadcast batch, vector operands.
for name, ash, bsh, ysh in [("2d", (3, 4), (4, 5), [3, 5]),
                            ("batched", (2, 3, 4), (2, 4, 5), [2, 3, 5]),
                            ("weight", (2, 3, 4), (4, 5), [2, 3, 5]),
                            ("bcast_batch", (2, 1, 3, 4), (3, 4, 5), [2, 3, 3, 5]),
                            ("vec_mat", (4,), (4, 5), [5]),
                            ("mat_vec", (3, 4), (4,), [3])]:
    case("matmul_" + name, [helper.make_node("MatMul", ["a", "b"], ["y"])],
         {"a": uniform(ash, -1, 1), "b": uniform(bsh, -1, 1)}, ysh)

# Gemm: transposes, alpha/beta, C broadcast as a row or a scalar.
for name, ta, tb, alpha, beta, csh in [("plain", 0, 0, 1.0, 1.0, (3, 5)),
                                       ("transA", 1, 0, 0.5, 1.0, (5,)),
                                       ("transB", 0, 1, 1.0, 2.0, (1, 5)),
                                       ("both", 1, 1, 1.5, 0.5, ())]:
    a = uniform((4, 3) if ta else (3, 4), -1, 1)
    b = uniform((5, 4) if tb else (4, 5), -1, 1)
    case("gemm_" + name, [helper.make_node("Gemm", ["a", "b", "c"], ["y"], transA=ta, transB=tb,
                                           alpha=alpha, beta=beta)],
         {"a": a, "b": b, "c": uniform(csh, -1, 1)}, [3, 5])

print("wrote", len(os.listdir(OUT)), "cases to", OUT)
