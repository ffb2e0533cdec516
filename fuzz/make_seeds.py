#!/usr/bin/python3
"""Writes the fuzz targets' seed corpora from the project's own files:

  onnx         every model under tests/ and tests/data, the ONNX backend node
               models the suite runs (libonnx-testdata), and the bundled
               models/*/model.onnx as skeletons (float initializers of more
               than 64 elements become graph inputs of the same type and
               shape: the same graph in a few KB; needs python3-onnx, skipped
               without it)
  idx          the first images and labels of Fashion-MNIST (dataset-fashion-
               mnist), plain and gzipped
  npy          small arrays of every dtype the loader reads, NPY versions 1-3
  tensorproto  input/target/output/grad TensorProto files under tests/, alone
               and as pb: data set examples
  checkpoint   checkpoints written by `matc train` on tests/data/bad/good.onnx
               (SGD with momentum, and AdamW)

Inputs that stand for several files join them with fuzz/fuzz.h's FUZZ_SPLIT.
Then `sh tools/fuzz.sh --merge` folds the seeds into fuzz/corpus/<target>,
keeping the inputs that add coverage.

usage: fuzz/make_seeds.py MATC OUTDIR      (MATC: a built matc binary)
"""
import glob
import gzip
import hashlib
import os
import struct
import subprocess
import sys
import tempfile

SPLIT = b"\n--matc-fuzz-split--\n"
root = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
matc, out = sys.argv[1], sys.argv[2]


def put(target, data):
    d = os.path.join(out, target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, hashlib.sha1(data).hexdigest()), "wb") as f:
        f.write(data)


def read(path):
    with open(path, "rb") as f:
        return f.read()


# --- onnx ---------------------------------------------------------------------
n = 0
for p in sorted(glob.glob(os.path.join(root, "tests", "**", "*.onnx"), recursive=True)):
    if os.path.getsize(p) <= 400_000:
        put("onnx", read(p))
        n += 1
for p in sorted(glob.glob("/usr/include/onnx/backend/test/data/*/*/model.onnx")):
    if os.path.getsize(p) <= 64_000:
        put("onnx", read(p))
        n += 1
try:
    import onnx
    from onnx import helper

    for p in sorted(glob.glob(os.path.join(root, "models", "*", "model.onnx"))):
        m = onnx.load(p)
        keep = []
        for t in m.graph.initializer:
            count = 1
            for d in t.dims:
                count *= d
            if t.data_type in (onnx.TensorProto.FLOAT, onnx.TensorProto.DOUBLE) and count > 64:
                m.graph.input.append(helper.make_tensor_value_info(t.name, t.data_type, list(t.dims)))
            else:
                keep.append(t)
        del m.graph.initializer[:]
        m.graph.initializer.extend(keep)
        put("onnx", m.SerializeToString())
        n += 1
except ImportError:
    print("make_seeds: no python3-onnx: bundled model skeletons skipped", file=sys.stderr)
print(f"onnx: {n} seeds")

# --- idx ------------------------------------------------------------------------
fm = "/usr/share/datasets/fashion-mnist"
if os.path.exists(os.path.join(fm, "train-images-idx3-ubyte.gz")):
    with gzip.open(os.path.join(fm, "train-images-idx3-ubyte.gz")) as f:
        img = f.read(16 + 4 * 784)
    with gzip.open(os.path.join(fm, "train-labels-idx1-ubyte.gz")) as f:
        lab = f.read(8 + 4)
    for k in (1, 3):
        im = struct.pack(">IIII", 0x803, k, 28, 28) + img[16:16 + k * 784]
        lb = struct.pack(">II", 0x801, k) + lab[8:8 + k]
        put("idx", im + SPLIT + lb)
        put("idx", gzip.compress(im, mtime=0) + SPLIT + gzip.compress(lb, mtime=0))
    # small images, and an images file alone
    put("idx", struct.pack(">IIII", 0x803, 2, 2, 3) + bytes(range(12)) + SPLIT + struct.pack(">II", 0x801, 2) + b"\x01\x07")
    put("idx", struct.pack(">IIII", 0x803, 1, 1, 1) + b"\xff")
print("idx: seeds written")


# --- npy ------------------------------------------------------------------------
def npy(descr, shape, payload, version=1):
    shp = f"({shape[0]},)" if len(shape) == 1 else "(" + ", ".join(str(d) for d in shape) + ")"
    text = "{'descr': '%s', 'fortran_order': False, 'shape': %s, }" % (descr, shp)
    pre = 10 if version == 1 else 12
    pad = (-(pre + len(text) + 1)) % 64
    text = (text + " " * pad + "\n").encode()
    lenf = struct.pack("<H", len(text)) if version == 1 else struct.pack("<I", len(text))
    return b"\x93NUMPY" + bytes([version, 0]) + lenf + text + payload


kinds = [("<f4", "f", 4), ("<f8", "d", 8), ("<i8", "q", 8), ("<i4", "i", 4), ("|u1", "B", 1),
         ("|i1", "b", 1), ("<i2", "h", 2), ("<u2", "H", 2), ("|b1", "B", 1)]
for descr, fmt, size in kinds:
    vals = [0, 1, 2, 1, 0, 1]
    x = npy(descr, (3, 2), struct.pack("<" + fmt * 6, *vals))
    y = npy("<i8", (3,), struct.pack("<qqq", 1, 0, -100))
    put("npy", x + SPLIT + y)
put("npy", npy("<f4", (2, 1, 2, 2), struct.pack("<8f", *range(8)), 2) + SPLIT +
    npy("<f4", (2, 3), struct.pack("<6f", *range(6)), 3))
put("npy", npy("<i8", (4,), struct.pack("<4q", 3, 1, 4, 1)))
print("npy: seeds written")

# --- tensorproto ----------------------------------------------------------------
pbs = sorted(glob.glob(os.path.join(root, "tests", "**", "*.pb"), recursive=True))
for p in pbs:
    if os.path.getsize(p) <= 16_000:
        put("tensorproto", read(p))
for d in sorted(glob.glob(os.path.join(root, "tests", "train", "*", "data")))[:4]:
    parts = []
    for k in (0, 1):
        for f in ("input_0.pb", "target_0.pb"):
            q = os.path.join(d, str(k), f)
            if os.path.exists(q) and os.path.getsize(q) <= 16_000:
                parts.append(read(q))
    if len(parts) == 4:
        put("tensorproto", SPLIT.join(parts))
print(f"tensorproto: {len(pbs)} files seen")

# --- checkpoint -----------------------------------------------------------------
with tempfile.TemporaryDirectory() as tmp:
    x = npy("<f4", (2, 4), bytes(32))
    y = npy("<f4", (2, 3), bytes(24))
    open(os.path.join(tmp, "x.npy"), "wb").write(x)
    open(os.path.join(tmp, "y.npy"), "wb").write(y)
    good = os.path.join(root, "tests", "data", "bad", "good.onnx")
    for opt in (["--momentum", "0.9"], ["--optimizer", "adamw"], []):
        ck = os.path.join(tmp, "ck")
        subprocess.run([matc, "train", good, "--data", f"npy:{tmp}/x.npy,{tmp}/y.npy", "--batch", "2",
                        "--eval-fraction", "0", "--steps", "2", "--checkpoint", ck] + opt,
                       check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        put("checkpoint", read(os.path.join(ck, "checkpoint.matc")))
print("checkpoint: seeds written")
