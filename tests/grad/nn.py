"""Gradient-check models for the NN ops (conv, pooling, normalisation).

Writes tests/grad/nn/<case>/model.onnx and test_data_set_0/cotangent_*.pb:
every differentiable input is an initializer, so `matc gradcheck --fd`
checks it against float64 finite differences. Pooling inputs are
distinct values (no ties, so the max is differentiable)."""
import os
import shutil

import numpy as np
import onnx
from onnx import helper, numpy_helper, TensorProto

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "nn")
rng = np.random.default_rng(7)


def rand(*shape, lo=-1.0, hi=1.0):
    return rng.uniform(lo, hi, shape).astype(np.float32)


def distinct(*shape):
    n = int(np.prod(shape))
    return (rng.permutation(n).astype(np.float32) * 0.05 - n * 0.025).reshape(shape)


def save(case, model, shapes=None):
    """model.onnx plus a seeded cotangent_<i>.pb per output (shapes from
    ONNX shape inference, or `shapes` for a model ONNX's schemas reject)."""
    d = os.path.join(OUT, case)
    os.makedirs(os.path.join(d, "test_data_set_0"), exist_ok=True)
    onnx.save(model, os.path.join(d, "model.onnx"))
    if shapes is None:
        inferred = onnx.shape_inference.infer_shapes(model, strict_mode=True)
        shapes = [[dim.dim_value for dim in o.type.tensor_type.shape.dim] for o in inferred.graph.output]
    for i, shape in enumerate(shapes):
        cot = rng.standard_normal(shape).astype(np.float32)
        onnx.save_tensor(numpy_helper.from_array(cot, "cotangent_%d" % i),
                         os.path.join(d, "test_data_set_0", "cotangent_%d.pb" % i))


def write(case, op, inits, attrs, nout=1, consts=(), outs=None, opset=17, node_outs=None, shapes=None):
    """One node `op` over initializers `inits` (name -> array; None for an
    absent optional input); `consts` are Constant-node inputs (not checked)."""
    names, init_list, nodes = [], [], []
    for name, arr in inits:
        if arr is None:
            names.append("")
        elif name in dict(consts):
            names.append(name)
        else:
            names.append(name)
            init_list.append(numpy_helper.from_array(arr, name))
    for name, arr in consts:
        nodes.append(helper.make_node("Constant", [], [name], value=numpy_helper.from_array(arr, name)))
    outs = outs or ["y%d" % i for i in range(nout)]
    nodes.append(helper.make_node(op, names, node_outs or outs, **attrs))
    graph = helper.make_graph(nodes, case, [],
                              [helper.make_tensor_value_info(o, TensorProto.FLOAT, None) for o in outs],
                              init_list)
    save(case, helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)]), shapes)


def conv(case, x, w, b=None, **attrs):
    write(case, "Conv", [("x", x), ("w", w), ("b", b)] if b is not None else [("x", x), ("w", w)], attrs)


def main():
    if os.path.isdir(OUT):
        shutil.rmtree(OUT)
    # Conv: input, weight and bias gradients.
    conv("conv2d_pad_bias", rand(2, 3, 6, 6), rand(4, 3, 3, 3), rand(4), pads=[1, 1, 1, 1])
    conv("conv2d_stride2_asym_pad", rand(2, 3, 7, 6), rand(4, 3, 3, 2), rand(4), strides=[2, 2],
         pads=[1, 0, 0, 1])
    conv("conv2d_dilation", rand(1, 2, 8, 7), rand(3, 2, 3, 3), dilations=[2, 2], pads=[1, 2, 1, 2])
    conv("conv2d_groups", rand(2, 4, 6, 6), rand(6, 2, 3, 3), rand(6), group=2, pads=[1, 1, 1, 1],
         strides=[2, 1])
    conv("conv2d_groups_stride1", rand(2, 4, 5, 6), rand(6, 2, 3, 2), group=2, pads=[1, 0, 2, 1],
         dilations=[1, 2])
    conv("conv2d_depthwise", rand(2, 3, 5, 5), rand(3, 1, 3, 3), group=3, strides=[2, 2])
    conv("conv2d_1x1", rand(2, 5, 4, 4), rand(3, 5, 1, 1), rand(3))
    conv("conv2d_same_upper", rand(1, 2, 7, 7), rand(3, 2, 3, 3), auto_pad="SAME_UPPER", strides=[2, 2])
    conv("conv1d_stride_dilation", rand(2, 3, 13), rand(4, 3, 3), rand(4), strides=[2], dilations=[2],
         pads=[2, 1])
    conv("conv3d", rand(1, 2, 4, 4, 4), rand(2, 2, 2, 2, 2), pads=[1, 0, 1, 0, 1, 0])
    # MaxPool: to each window's argmax.
    mp = lambda case, x, **a: write(case, "MaxPool", [("x", x)], a)
    mp("maxpool2d", distinct(2, 3, 6, 6), kernel_shape=[2, 2], strides=[2, 2])
    mp("maxpool2d_overlap_pad", distinct(1, 2, 7, 7), kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1])
    mp("maxpool2d_ceil", distinct(1, 2, 8, 8), kernel_shape=[3, 3], strides=[2, 2], ceil_mode=1)
    mp("maxpool2d_dilation", distinct(1, 2, 7, 7), kernel_shape=[2, 2], dilations=[2, 2])
    mp("maxpool1d", distinct(2, 3, 11), kernel_shape=[3], strides=[2], pads=[1, 1])
    mp("maxpool2d_big_window", distinct(1, 2, 9, 9), kernel_shape=[5, 5], strides=[2, 2], pads=[2, 2, 2, 2])
    write("maxpool2d_indices", "MaxPool", [("x", distinct(1, 2, 6, 6))], dict(kernel_shape=[2, 2], strides=[2, 2]),
          outs=["y"])
    # AveragePool.
    ap = lambda case, x, **a: write(case, "AveragePool", [("x", x)], a)
    ap("avgpool2d", rand(2, 3, 6, 6), kernel_shape=[2, 2], strides=[2, 2])
    ap("avgpool2d_pad_exclude", rand(1, 2, 7, 7), kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1])
    ap("avgpool2d_pad_include", rand(1, 2, 7, 7), kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1],
       count_include_pad=1)
    ap("avgpool2d_ceil", rand(1, 2, 8, 8), kernel_shape=[3, 3], strides=[2, 2], ceil_mode=1)
    ap("avgpool1d_big_window", rand(2, 2, 25), kernel_shape=[17], strides=[3], pads=[4, 4])
    ap("avgpool2d_big_window", rand(1, 2, 9, 9), kernel_shape=[5, 5], strides=[1, 1], pads=[2, 2, 2, 2])
    write("global_avgpool", "GlobalAveragePool", [("x", rand(2, 3, 4, 5))], {})
    write("global_maxpool", "GlobalMaxPool", [("x", distinct(2, 3, 4, 5))], {})
    # BatchNormalization: inference (statistics are initializers too) and
    # training (batch statistics; the running inputs are constants unless
    # the running outputs are used).
    C = 3
    bn = lambda x: [("x", x), ("scale", rand(C, lo=0.5, hi=1.5)), ("bias", rand(C)),
                    ("mean", rand(C)), ("var", rand(C, lo=0.5, hi=2.0))]
    write("batchnorm_inference", "BatchNormalization", bn(rand(2, C, 4, 4)), dict(epsilon=1e-3))
    write("batchnorm_inference_3d", "BatchNormalization", bn(rand(4, C, 5)), {})
    ins = bn(rand(3, C, 3, 4))
    write("batchnorm_training", "BatchNormalization", ins, dict(training_mode=1, epsilon=1e-3),
          consts=ins[3:], outs=["y"], node_outs=["y", "rm", "rv"])
    write("batchnorm_training_2d", "BatchNormalization", bn(rand(6, C)), dict(training_mode=1),
          consts=ins[3:], outs=["y"], node_outs=["y", "rm", "rv"])
    write("batchnorm_training_running", "BatchNormalization", bn(rand(2, C, 5)),
          dict(training_mode=1, momentum=0.8), outs=["y", "running_mean", "running_var"])
    # LayerNormalization (opset 17) and InstanceNormalization.
    write("layernorm_last", "LayerNormalization", [("x", rand(2, 3, 6)), ("scale", rand(6)), ("bias", rand(6))],
          dict(epsilon=1e-3))
    write("layernorm_axis1", "LayerNormalization", [("x", rand(2, 3, 4)), ("scale", rand(3, 4)), ("bias", rand(3, 4))],
          dict(axis=1))
    write("layernorm_bcast_scale_nobias", "LayerNormalization", [("x", rand(3, 2, 5)), ("scale", rand(1, 5))],
          dict(axis=-2))
    write("instancenorm", "InstanceNormalization", [("x", rand(2, 3, 4, 5)), ("scale", rand(3)), ("bias", rand(3))],
          dict(epsilon=1e-3))
    write("instancenorm_1d", "InstanceNormalization", [("x", rand(2, 4, 7)), ("scale", rand(4)), ("bias", rand(4))], {})
    # Training step of a small conv net: conv, BN, relu, pools together.
    x, w1, w2 = rand(2, 2, 8, 8), rand(4, 2, 3, 3), rand(5, 4, 3, 3)
    nodes = [helper.make_node("Conv", ["x", "w1"], ["c1"], pads=[1, 1, 1, 1]),
             helper.make_node("BatchNormalization", ["c1", "s", "b", "m", "v"], ["n1", "rm", "rv"],
                              training_mode=1),
             helper.make_node("Relu", ["n1"], ["r1"]),
             helper.make_node("MaxPool", ["r1"], ["p1"], kernel_shape=[2, 2], strides=[2, 2]),
             helper.make_node("Conv", ["p1", "w2", "b2"], ["c2"], strides=[2, 2], pads=[1, 1, 1, 1]),
             helper.make_node("GlobalAveragePool", ["c2"], ["y"])]
    inits = [numpy_helper.from_array(a, n) for n, a in
             [("x", x), ("w1", w1), ("s", rand(4, lo=0.5, hi=1.5)), ("b", rand(4)), ("w2", w2), ("b2", rand(5))]]
    consts = [helper.make_node("Constant", [], [n], value=numpy_helper.from_array(a, n))
              for n, a in [("m", np.zeros(4, np.float32)), ("v", np.ones(4, np.float32))]]
    graph = helper.make_graph(consts + nodes, "small_cnn", [],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], inits)
    save("small_cnn", helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]))
    # Cases below were added later; they come after the ones above so those
    # keep their random draws.
    more()


def signed(*shape):
    """Values with |x| in [0.3, 1]: away from Abs/Sign kinks."""
    return (rand(*shape, lo=0.3, hi=1.0) * np.where(rand(*shape) < 0, -1, 1)).astype(np.float32)


def resize(case, x, mode, scales=None, sizes=None, roi=None, opset=17, **attrs):
    """Resize with X an initializer and roi/scales/sizes constants."""
    ins, consts = [("x", x)], []
    for name, arr in (("roi", roi), ("scales", scales), ("sizes", sizes)):
        if arr is not None:
            arr = np.array(arr, np.int64 if name == "sizes" else np.float32)
            consts.append((name, arr))
        ins.append((name, arr))
    while ins[-1][1] is None:
        ins.pop()
    write(case, "Resize", ins, dict(mode=mode, **attrs), consts=consts, opset=opset)


def more():
    # ConvTranspose: input, weight and bias gradients.
    ct = lambda case, ins, **a: write(case, "ConvTranspose", ins, a)
    ct("convt2d_stride2_bias", [("x", rand(2, 3, 4, 4)), ("w", rand(3, 2, 3, 3)), ("b", rand(2))], strides=[2, 2])
    ct("convt2d_pads_output_padding", [("x", rand(1, 2, 4, 5)), ("w", rand(2, 3, 3, 3))], strides=[2, 2],
       pads=[1, 0, 1, 1], output_padding=[1, 0])
    ct("convt2d_groups_dilation", [("x", rand(2, 4, 3, 3)), ("w", rand(4, 2, 2, 3)), ("b", rand(4))], group=2,
       strides=[1, 2], dilations=[2, 1])
    ct("convt1d_stride3_pads", [("x", rand(2, 3, 5)), ("w", rand(3, 2, 4))], strides=[3], pads=[1, 2])
    ct("convt2d_same_upper", [("x", rand(1, 2, 3, 3)), ("w", rand(2, 2, 3, 3))], strides=[2, 2],
       auto_pad="SAME_UPPER")
    # LpPool (p = 1, 2, 3) and GlobalLpPool.
    lp = lambda case, x, **a: write(case, "LpPool", [("x", x)], a)
    lp("lppool2d_p2_pad", signed(2, 2, 6, 6), kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1])
    lp("lppool2d_p1", signed(1, 2, 5, 5), kernel_shape=[2, 2], p=1)
    lp("lppool1d_p3", signed(2, 3, 9), kernel_shape=[3], strides=[2], p=3)
    write("global_lppool_p2", "GlobalLpPool", [("x", signed(2, 3, 4, 5))], {})
    write("global_lppool_p3", "GlobalLpPool", [("x", signed(2, 3, 6))], dict(p=3))
    # LRN (odd and even windows) and MeanVarianceNormalization.
    write("lrn_size3", "LRN", [("x", rand(2, 5, 3, 3))], dict(size=3, alpha=0.5, beta=0.75, bias=1.0))
    write("lrn_size4_3d", "LRN", [("x", rand(2, 6, 4))], dict(size=4, alpha=0.8, beta=0.6, bias=2.0))
    write("mvn_default_axes", "MeanVarianceNormalization", [("x", rand(2, 3, 3, 4))], {})
    write("mvn_axes_1", "MeanVarianceNormalization", [("x", rand(3, 5, 2))], dict(axes=[1]))
    # Resize: up and down, nearest/linear/cubic, coordinate modes.
    resize("resize_nearest_up2", rand(1, 2, 3, 4), "nearest", scales=[1, 1, 2, 2])
    resize("resize_nearest_down_floor", rand(2, 2, 6, 5), "nearest", scales=[1, 1, 0.5, 0.6],
           coordinate_transformation_mode="asymmetric", nearest_mode="floor")
    resize("resize_nearest_sizes_ceil", rand(1, 1, 4, 5), "nearest", sizes=[1, 1, 7, 3],
           coordinate_transformation_mode="align_corners", nearest_mode="round_prefer_ceil")
    resize("resize_linear_up_half_pixel", rand(1, 2, 3, 4), "linear", scales=[1, 1, 2, 1.5])
    resize("resize_linear_down_half_pixel", rand(1, 2, 8, 7), "linear", scales=[1, 1, 0.5, 0.6])
    resize("resize_linear_align_corners", rand(2, 1, 4, 3), "linear", sizes=[2, 1, 7, 5],
           coordinate_transformation_mode="align_corners")
    resize("resize_linear_asymmetric_down", rand(1, 2, 7, 6), "linear", scales=[1, 1, 0.5, 0.75],
           coordinate_transformation_mode="asymmetric")
    resize("resize_linear_pytorch_3d", rand(2, 3, 5), "linear", sizes=[2, 3, 8],
           coordinate_transformation_mode="pytorch_half_pixel")
    resize("resize_cubic_up", rand(1, 1, 4, 4), "cubic", scales=[1, 1, 2, 1.5])
    resize("resize_cubic_down_exclude", rand(1, 1, 8, 6), "cubic", scales=[1, 1, 0.5, 0.7], exclude_outside=1)
    resize("resize_tf_crop_and_resize", rand(1, 1, 5, 5), "linear", sizes=[1, 1, 4, 6],
           roi=[0, 0, 0.1, -0.2, 1, 1, 0.8, 1.3], coordinate_transformation_mode="tf_crop_and_resize",
           extrapolation_value=0.5)
    write("upsample_nearest_opset9", "Upsample", [("x", rand(1, 2, 3, 2)), ("scales", np.array([1, 1, 2, 3], np.float32))],
          dict(mode="nearest"), consts=[("scales", np.array([1, 1, 2, 3], np.float32))], opset=9)
    write("upsample_linear_opset9", "Upsample", [("x", rand(1, 2, 3, 4)), ("scales", np.array([1, 1, 2, 1.5], np.float32))],
          dict(mode="linear"), consts=[("scales", np.array([1, 1, 2, 1.5], np.float32))], opset=9)

    # 3x3 stride-1 convs with >= 16 channels take the Winograd F(2x2, 3x3)
    # path (compiler/ops/nn.c), their dX too: odd outputs (a tile's second
    # row/column cut off), asymmetric and no padding, bias.
    conv("conv2d_winograd_odd_bias", rand(2, 16, 5, 7), rand(16, 16, 3, 3), rand(16), pads=[1, 1, 1, 1])
    conv("conv2d_winograd_asym_pad", rand(1, 16, 6, 4), rand(20, 16, 3, 3), pads=[0, 1, 2, 0])
    conv("conv2d_winograd_no_pad", rand(2, 17, 4, 5), rand(16, 17, 3, 3), rand(16))
    # Pooling windows that tile the input (stride = window, no padding) take
    # a one-tap dX (compiler/ops/nn.c, pool_disjoint): odd sizes, whose last
    # row and column no window covers (floor) or only a partial one (ceil).
    mp = lambda case, x, **a: write(case, "MaxPool", [("x", x)], a)
    mp("maxpool2d_disjoint_odd", distinct(2, 3, 7, 5), kernel_shape=[2, 2], strides=[2, 2])
    mp("maxpool2d_disjoint_ceil", distinct(1, 2, 7, 7), kernel_shape=[2, 2], strides=[2, 2], ceil_mode=1)
    mp("maxpool1d_disjoint", distinct(2, 3, 10), kernel_shape=[3], strides=[3])
    write("avgpool2d_disjoint_ceil", "AveragePool", [("x", rand(1, 2, 7, 5))],
          dict(kernel_shape=[2, 3], strides=[2, 3], ceil_mode=1))
    mp("maxpool2d_disjoint_endpad", distinct(1, 2, 5, 6), kernel_shape=[2, 2], strides=[2, 2], pads=[0, 0, 1, 2])
    write("lppool2d_disjoint", "LpPool", [("x", signed(2, 2, 6, 4))], dict(kernel_shape=[2, 2], strides=[2, 2]))
    # Winograd convs with even outputs and a bias: an 8-wide image (Wp = 10,
    # one junk tile column per image), and asymmetric pads.
    conv("conv2d_winograd_even_bias", rand(2, 16, 6, 8), rand(16, 16, 3, 3), rand(16), pads=[1, 1, 1, 1])
    conv("conv2d_winograd_even_asym", rand(2, 16, 5, 7), rand(18, 16, 3, 3), rand(18), pads=[1, 0, 0, 1])
    # Training-mode BatchNormalization that keeps its batch mean and variance
    # as outputs 3 and 4, as the training step makes it
    # (passes/build_train_step.c): the backward reads those instead of
    # reducing over x again. ONNX's schema allows 3 outputs, so the
    # cotangent's shape is given.
    C = 3
    ins = [("x", rand(4, C, 3, 2)), ("scale", rand(C, lo=0.5, hi=1.5)), ("bias", rand(C)),
           ("mean", rand(C)), ("var", rand(C, lo=0.5, hi=2.0))]
    write("batchnorm_training_saved", "BatchNormalization", ins, dict(training_mode=1, epsilon=1e-3),
          consts=ins[3:], outs=["y"], node_outs=["y", "rm", "rv", "saved_mean", "saved_var"],
          shapes=[[4, C, 3, 2]])


if __name__ == "__main__":
    main()
