#!/usr/bin/env python3
"""Writes hostile inputs for tests/bad_inputs.sh into OUTDIR: models and
data files that pass each of matc's limits on untrusted input (README,
"Hostile inputs and fuzzing") by one, written as raw protobuf, NPY, IDX and
checkpoint bytes with the standard library only (the largest is 16 MB).

usage: tests/hostile.py OUTDIR
"""
import os
import struct
import sys

out = sys.argv[1]
os.makedirs(out, exist_ok=True)


def varint(n):
    n &= (1 << 64) - 1
    b = bytearray()
    while True:
        c = n & 0x7F
        n >>= 7
        if n:
            b.append(c | 0x80)
        else:
            b.append(c)
            return bytes(b)


def key(field, wire):
    return varint(field << 3 | wire)


def vi(field, n):                      # a varint field
    return key(field, 0) + varint(n)


def ld(field, payload):                # a length-delimited field
    if isinstance(payload, str):
        payload = payload.encode()
    return key(field, 2) + varint(len(payload)) + payload


def packed(field, values):
    return ld(field, b"".join(varint(v) for v in values))


FLOAT, INT64 = 1, 7


def tensor(name, dt, dims, raw=b""):   # TensorProto
    return b"".join(vi(1, d) for d in dims) + vi(2, dt) + ld(8, name) + ld(9, raw)


def value_info(name, dt, dims):        # ValueInfoProto of a tensor
    shape = b"".join(ld(1, vi(1, d)) for d in dims)
    return ld(1, name) + ld(2, ld(1, vi(1, dt) + ld(2, shape)))


def node(op, ins, outs, name="n", attrs=()):
    return (b"".join(ld(1, i) for i in ins) + b"".join(ld(2, o) for o in outs) + ld(3, name) + ld(4, op) +
            b"".join(ld(5, a) for a in attrs))


def attr_ints(name, values):
    return ld(1, name) + packed(8, values) + vi(20, 7)


def attr_int(name, v):
    return ld(1, name) + vi(3, v) + vi(20, 2)


def model(graph, opset=13):
    return vi(1, 8) + ld(8, vi(2, opset)) + ld(7, graph)


def graph(nodes=(), inits=(), inputs=(), outputs=(), extra=b""):
    return (b"".join(ld(1, n) for n in nodes) + ld(2, "g") + b"".join(ld(5, t) for t in inits) +
            b"".join(ld(11, i) for i in inputs) + b"".join(ld(12, o) for o in outputs) + extra)


def save(name, data):
    with open(os.path.join(out, name), "wb") as f:
        f.write(data)


x4 = value_info("x", FLOAT, [2, 4])
y = value_info("y", FLOAT, [2, 4])
relu = node("Relu", ["x"], ["y"], "relu")

# Nesting: 5,000 TypeProtos inside each other (sequence of sequence of ...;
# 200,000 overflowed protobuf-c's recursion before the limit),
# and 40 If subgraphs inside each other (3 messages per level).
t = b""
for _ in range(5_000):
    t = ld(4, ld(1, t))
save("deep_types.onnx", model(graph([relu], inputs=[ld(1, "x") + ld(2, t)], outputs=[y])))
g = graph([relu], inputs=[x4], outputs=[y])
for _ in range(40):
    attr = ld(1, "then_branch") + ld(6, g) + vi(20, 5)
    g = graph([node("If", ["c"], ["y"], "if", [attr])], inputs=[value_info("c", 9, [])], outputs=[y])
save("deep_subgraphs.onnx", model(g))

# An initializer whose element count overflows 64 bits, one of rank 9, a graph
# input of 2^62 elements, an Expand whose output would have 2^60.
save("overflow_elems.onnx", model(graph([relu], [tensor("w", FLOAT, [1 << 32, 1 << 32, 1 << 32])], [x4], [y])))
save("rank9.onnx", model(graph([relu], [tensor("w", FLOAT, [1] * 9, b"\0\0\0\0")], [x4], [y])))
save("input_elems.onnx", model(graph([relu], inputs=[value_info("x", FLOAT, [1 << 31, 1 << 31])], outputs=[y])))
shape = tensor("s", INT64, [2], struct.pack("<qq", 1 << 30, 1 << 30))
save("expand_elems.onnx", model(graph([node("Expand", ["x", "s"], ["y"], "expand")], [shape],
                                      [value_info("x", FLOAT, [1])], [y])))

# Counts: 300 attributes on a node, 2^20 + 1 ints in one attribute, a node
# with 65 inputs, a perm of 9 entries, 2^20 + 1 value_info entries, 2^23 + 1
# messages.
attrs = [attr_int(f"a{i}", i) for i in range(300)]
save("many_attrs.onnx", model(graph([node("Relu", ["x"], ["y"], "relu", attrs)], inputs=[x4], outputs=[y])))
big = attr_ints("perm", [1] * ((1 << 20) + 1))
save("attr_elems.onnx", model(graph([node("Transpose", ["x"], ["y"], "tr", [big])], inputs=[x4], outputs=[y])))
save("node_inputs.onnx", model(graph([node("Sum", ["x"] * 65, ["y"], "sum")], inputs=[x4], outputs=[y])))
save("perm9.onnx", model(graph([node("Transpose", ["x"], ["y"], "tr", [attr_ints("perm", range(9))])],
                               inputs=[x4], outputs=[y])))
save("value_infos.onnx", model(graph([relu], inputs=[x4], outputs=[y], extra=ld(13, b"") * ((1 << 20) + 1))))
save("messages.onnx", model(graph([relu], inputs=[x4], outputs=[y], extra=b"\x6a\x00" * ((1 << 23) + 1))))

# Constant folding over its budget (a 1024^3 MatMul of folded constants):
# left to run time, the model still inspects at once.
cs = tensor("shape", INT64, [2], struct.pack("<qq", 1024, 1024))
one = ld(1, "value") + ld(5, tensor("v", FLOAT, [1], struct.pack("<f", 1))) + vi(20, 4)
save("fold_budget.onnx", model(graph(
    [node("ConstantOfShape", ["shape"], ["a"], "cos", [one]), node("MatMul", ["a", "a"], ["m"], "mm"),
     node("ReduceSum", ["m"], ["r"], "sum", [attr_int("keepdims", 0)]), node("Add", ["x", "r"], ["y"], "add")],
    [cs], [x4], [y])))

# TensorProto data files: rank 9; 2^61 elements.
os.makedirs(os.path.join(out, "pb_rank9", "0"), exist_ok=True)
save("pb_rank9/0/input_0.pb", tensor("x", FLOAT, [1] * 9, b"\0\0\0\0"))
save("pb_rank9/0/target_0.pb", tensor("y", INT64, [], struct.pack("<q", 1)))
os.makedirs(os.path.join(out, "pb_elems", "0"), exist_ok=True)
save("pb_elems/0/input_0.pb", tensor("x", FLOAT, [1 << 31, 1 << 30]))
save("pb_elems/0/target_0.pb", tensor("y", INT64, [], struct.pack("<q", 1)))
os.makedirs(os.path.join(out, "run_elems"), exist_ok=True)
save("run_elems/input_0.pb", tensor("x", FLOAT, [1 << 31, 1 << 31]))


# NPY: rank 10; a shape of 2^80 elements.
def npy(shape_text, payload=b""):
    text = "{'descr': '<f4', 'fortran_order': False, 'shape': %s, }" % shape_text
    text = (text + " " * ((-(11 + len(text))) % 64) + "\n").encode()
    return b"\x93NUMPY\x01\x00" + struct.pack("<H", len(text)) + text + payload


save("rank10.npy", npy("(" + ", ".join(["1"] * 10) + ")", b"\0\0\0\0"))
save("elems.npy", npy("(1099511627776, 1099511627776)"))
save("labels.npy", npy("(1,)", b"\0\0\0\0"))

# IDX: 65535 x 65535 x 65535 images in a 16-byte header.
os.makedirs(os.path.join(out, "idx_big"), exist_ok=True)
save("idx_big/train-images-idx3-ubyte", struct.pack(">IIII", 0x803, 65535, 65535, 65535))
save("idx_big/train-labels-idx1-ubyte", struct.pack(">II", 0x801, 65535))

# A checkpoint (valid checksum) whose first tensor has rank 9.
hdr = (b"model=x.onnx\nfingerprint=0123456789abcdef\ninitializers=1\noptimizer=sgd\nstep=1\nepoch=0\n"
       b"pos=1\nseed=0\nntrain=1\ntensors=1\n")
body = b"MATCCKPT" + struct.pack("<II", 1, len(hdr)) + hdr
body += struct.pack("<I", 1) + b"w" + struct.pack("<II", 1, 9) + struct.pack("<9q", *([1] * 9)) + struct.pack("<Q", 4) + b"\0" * 4
h = 14695981039346656037
for c in body:
    h = ((h ^ c) * 1099511628211) & ((1 << 64) - 1)
os.makedirs(os.path.join(out, "ck_rank9"), exist_ok=True)
save("ck_rank9/checkpoint.matc", body + struct.pack("<Q", h) + b"MATCEND\n")
