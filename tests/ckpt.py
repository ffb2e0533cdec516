"""Readers the Python tests share: a checkpoint's tensors (the format in
README's "Checkpoints") and a JSON Lines metrics log's step records."""
import json
import re
import struct


def checkpoint_tensors(path):
    """name -> (ONNX dtype code, dims, raw bytes) of every tensor in a
    checkpoint file."""
    b = open(path, "rb").read()
    assert b[:8] == b"MATCCKPT", "%s: not a matc checkpoint" % path
    h = struct.unpack_from("<I", b, 12)[0]
    count = int(re.search(r"^tensors=(\d+)$", b[16:16 + h].decode(), re.M).group(1))
    off, out = 16 + h, {}
    for _ in range(count):
        n = struct.unpack_from("<I", b, off)[0]
        name = b[off + 4:off + 4 + n].decode()
        off += 4 + n
        dt, rank = struct.unpack_from("<II", b, off)
        dims = struct.unpack_from("<%dq" % rank, b, off + 8)
        off += 8 + 8 * rank
        nbytes = struct.unpack_from("<Q", b, off)[0]
        out[name] = (dt, dims, b[off + 8:off + 8 + nbytes])
        off += 8 + nbytes
    return out


def log_steps(path):
    """The step records (those with a loss) of a JSON Lines metrics log."""
    return [json.loads(l) for l in open(path) if '"loss"' in l]
