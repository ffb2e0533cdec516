#!/usr/bin/python3
"""Writes the layout family's gradient-check cases: tests/grad/layout/<case>/
model.onnx and test_data_set_0/ (integer indices as graph inputs). Every
differentiable input is an initializer, so `matc gradcheck --fd` checks it.
Run from anywhere; deterministic."""
import os
import shutil

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "layout")
rng = np.random.default_rng(7)
F = TensorProto.FLOAT


def param(name, shape):
    return numpy_helper.from_array(rng.uniform(-1, 1, shape).astype(np.float32), name)


def const(name, values, dtype=np.int64):
    return numpy_helper.from_array(np.array(values, dtype=dtype), name)


def case(name, nodes, inits, outputs, inputs=(), opset=17):
    """outputs: names of float graph outputs; inputs: (name, array) fed by
    input_<i>.pb."""
    d = os.path.join(ROOT, name)
    os.makedirs(os.path.join(d, "test_data_set_0"))
    g_in = [helper.make_tensor_value_info(n, onnx.mapping.NP_TYPE_TO_TENSOR_TYPE[a.dtype], a.shape)
            for n, a in inputs]
    g_out = [helper.make_tensor_value_info(o, F, None) for o in outputs]
    g = helper.make_graph(nodes, name, g_in, g_out, inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)], producer_name="layout.py")
    onnx.save(m, os.path.join(d, "model.onnx"))
    for i, (n, a) in enumerate(inputs):
        with open(os.path.join(d, "test_data_set_0", "input_%d.pb" % i), "wb") as f:
            f.write(numpy_helper.from_array(a, n).SerializeToString())


N = helper.make_node


def one(name, op, shape, extra_inits=(), extra_inputs=(), inputs=(), opset=17, **attrs):
    """A single op on initializer x (plus extra inputs)."""
    case(name, [N(op, ["x", *extra_inputs], ["y"], **attrs)], [param("x", shape), *extra_inits], ["y"],
         inputs, opset)


def main():
    shutil.rmtree(ROOT, ignore_errors=True)
    # Concat: every input a parameter; or one a constant (gets no gradient).
    case("concat_axis1", [N("Concat", ["a", "b", "c"], ["y"], axis=1)],
         [param("a", [2, 1, 3]), param("b", [2, 3, 3]), param("c", [2, 2, 3])], ["y"])
    case("concat_neg_axis_const", [N("Concat", ["a", "k", "b"], ["y"], axis=-1)],
         [param("a", [3, 2]), const("k", np.ones([3, 4]), np.float32), param("b", [3, 1])], ["y"])
    # Split: sizes input; an unused output gets zeros; equal parts on a negative axis.
    case("split_sizes_unused", [N("Split", ["x", "s"], ["y0", "y1", "y2"], axis=0)],
         [param("x", [6, 3]), const("s", [1, 3, 2])], ["y0", "y2"])
    case("split_equal_neg_axis", [N("Split", ["x"], ["y0", "y1"], axis=-1)], [param("x", [2, 3, 4])],
         ["y0", "y1"])
    # Slice: unit steps with negative starts/ends, strides, negative steps and axes.
    def sl(name, shape, starts, ends, axes=None, steps=None):
        ins, inits = ["x", "st", "en"], [param("x", shape), const("st", starts), const("en", ends)]
        if axes is not None:
            ins.append("ax"); inits.append(const("ax", axes))
        if steps is not None:
            ins.append("sp"); inits.append(const("sp", steps))
        case(name, [N("Slice", ins, ["y"])], inits, ["y"])
    sl("slice_unit", [4, 5], [1, -4], [3, -1])
    sl("slice_unit_axes", [3, 4, 5], [-2, 1], [100, 3], axes=[-1, 0])
    sl("slice_step2", [7, 4], [1], [7], axes=[0], steps=[2])
    sl("slice_step_neg1", [3, 5], [-1, 4], [-100, 0], axes=[1, 0], steps=[-1, -2])
    sl("slice_step_mixed", [2, 6, 5], [0, 5, 1], [2, 0, 5], axes=[0, -2, 2], steps=[1, -3, 3])
    # Expand and Tile.
    one("expand", "Expand", [3, 1], [const("s", [2, 3, 4])], ["s"])
    one("expand_same_rank", "Expand", [1, 4], [const("s", [3, 1])], ["s"])
    one("tile_2d", "Tile", [2, 3], [const("r", [2, 1])], ["r"])
    one("tile_3d", "Tile", [2, 1, 3], [const("r", [1, 3, 2])], ["r"])
    # Pad: constant (pads both ways, a cropping negative pad, a trainable constant), reflect, edge.
    one("pad_constant", "Pad", [2, 3], [const("p", [1, 0, 2, 1])], ["p"])
    case("pad_crop_value", [N("Pad", ["x", "p", "v"], ["y"])],
         [param("x", [3, 4]), const("p", [1, -1, -1, 2]), param("v", [])], ["y"])
    case("pad_axes", [N("Pad", ["x", "p", "", "ax"], ["y"])],
         [param("x", [2, 3, 4]), const("p", [2, 1, 0, 3]), const("ax", [-1, 1])], ["y"], opset=18)
    one("pad_reflect", "Pad", [3, 4], [const("p", [2, 1, 1, 3])], ["p"], mode="reflect")
    one("pad_wrap", "Pad", [2, 3], [const("p", [1, 4, 0, 2])], ["p"], mode="wrap", opset=19)
    one("pad_edge", "Pad", [1, 2, 3, 3], [const("p", [0, 0, 2, 1, 0, 0, 1, 3])], ["p"], mode="edge")
    # Gather: embedding rows with repeated and negative indices (int64 and
    # int32), other axes, a scalar index.
    ids = np.array([[0, 2, -1, 2], [4, 0, 0, -5]], np.int64)
    one("gather_embedding", "Gather", [5, 3], inputs=[("i", ids)], extra_inputs=["i"])
    one("gather_embedding_i32", "Gather", [5, 3], inputs=[("i", ids.astype(np.int32))], extra_inputs=["i"])
    one("gather_axis1", "Gather", [2, 4, 3], inputs=[("i", np.array([[3, -1], [0, 3], [1, 2]], np.int64))],
        extra_inputs=["i"], axis=1)
    one("gather_neg_axis_scalar", "Gather", [2, 3, 4], inputs=[("i", np.array(-2, np.int64))],
        extra_inputs=["i"], axis=-1)
    # GatherElements (scatter-add), GatherND.
    one("gather_elements_axis0", "GatherElements", [3, 2],
        inputs=[("i", np.array([[0, 2], [2, -1], [-3, 0], [1, 1]], np.int64))], extra_inputs=["i"], axis=0)
    one("gather_elements_neg_axis", "GatherElements", [2, 4],
        inputs=[("i", np.array([[3, 3, -4], [1, 0, 1]], np.int32))], extra_inputs=["i"], axis=-1)
    one("gather_nd", "GatherND", [3, 4, 2],
        inputs=[("i", np.array([[0, 1], [2, -1], [0, 1], [1, 3]], np.int64))], extra_inputs=["i"])
    # DepthToSpace (both modes), SpaceToDepth.
    one("depth_to_space_dcr", "DepthToSpace", [1, 8, 2, 3], blocksize=2)
    one("depth_to_space_crd", "DepthToSpace", [2, 8, 2, 1], blocksize=2, mode="CRD")
    one("space_to_depth", "SpaceToDepth", [1, 2, 4, 6], blocksize=2)
    # ReverseSequence, both axis layouts.
    one("reverse_sequence_tb", "ReverseSequence", [4, 3, 2], inputs=[("l", np.array([4, 1, 3], np.int64))],
        extra_inputs=["l"], time_axis=0, batch_axis=1)
    one("reverse_sequence_bt", "ReverseSequence", [2, 5], inputs=[("l", np.array([2, 5], np.int64))],
        extra_inputs=["l"], time_axis=1, batch_axis=0)
    # Trilu, Scatter (data and updates), Compress.
    one("trilu_upper", "Trilu", [3, 4])
    one("trilu_lower_k", "Trilu", [2, 3, 4], [const("k", -1)], ["k"], upper=0)
    case("scatter_elements", [N("ScatterElements", ["x", "i", "u"], ["y"], axis=1)],
         [param("x", [3, 4]), param("u", [2, 2])], ["y"], [("i", np.array([[1, -1], [0, 2]], np.int64))])
    case("scatter_elements_add", [N("ScatterElements", ["x", "i", "u"], ["y"], axis=0, reduction="add")],
         [param("x", [3, 2]), param("u", [2, 2])], ["y"], [("i", np.array([[1, 1], [1, 0]], np.int64))])
    case("scatter_nd", [N("ScatterND", ["x", "i", "u"], ["y"])],
         [param("x", [4, 3]), param("u", [2, 3])], ["y"], [("i", np.array([[2], [0]], np.int64))])
    one("compress_axis", "Compress", [3, 5], [const("c", [1, 0, 1, 1], np.bool_)], ["c"], axis=1)
    one("compress_flat", "Compress", [2, 3], [const("c", [0, 1, 1, 0, 1], np.bool_)], ["c"])
    # Values that carry no gradient: shapes, generated constants, EyeLike;
    # autodiff must not ask them for a rule. Range differentiates in start and delta.
    case("no_gradient_ops", [
        N("Shape", ["x"], ["s"]),
        N("ConstantOfShape", ["s"], ["ones"], value=numpy_helper.from_array(np.array([2.0], np.float32))),
        N("Mul", ["x", "ones"], ["a"]),
        N("EyeLike", ["x"], ["e"]),
        N("Mul", ["e", "w"], ["b"]),
        N("Add", ["a", "b"], ["y"]),
    ], [param("x", [3, 3]), param("w", [3, 3])], ["y"])
    case("range", [N("Range", ["start", "limit", "delta"], ["y"])],
         [numpy_helper.from_array(np.array(0.3, np.float32), "start"),
          numpy_helper.from_array(np.array(5.0, np.float32), "limit"),
          numpy_helper.from_array(np.array(1.1, np.float32), "delta")], ["y"])
    # A BERT-like embedding block: gather, slice of position table, add, concat.
    case("embedding_block", [
        N("Gather", ["tok", "ids"], ["te"]),
        N("Slice", ["pos", "st", "en", "ax"], ["pe"]),
        N("Add", ["te", "pe"], ["e"]),
        N("Concat", ["e", "e"], ["y"], axis=-1),
    ], [param("tok", [6, 4]), param("pos", [5, 4]), const("st", [0]), const("en", [3]), const("ax", [0])],
        ["y"], [("ids", np.array([[1, 5, 1], [0, 1, -1]], np.int64))])
    # A stored Range limit would move the length under finite differences;
    # keep it a Constant node so only start and delta are checked.
    m = onnx.load(os.path.join(ROOT, "range", "model.onnx"))
    lim = [t for t in m.graph.initializer if t.name == "limit"][0]
    m.graph.initializer.remove(lim)
    m.graph.node.insert(0, N("Constant", [], ["limit"], value=lim))
    onnx.save(m, os.path.join(ROOT, "range", "model.onnx"))


if __name__ == "__main__":
    main()
