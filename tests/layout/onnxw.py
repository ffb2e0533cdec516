# Minimal ONNX protobuf writer (no dependencies) for hand-made test models.
import struct, os
def varint(n):
    if n < 0: n += 1 << 64
    out = b''
    while True:
        b = n & 0x7f; n >>= 7
        if n: out += bytes([b | 0x80])
        else: return out + bytes([b])
def key(f, wt): return varint((f << 3) | wt)
def vi(f, n): return key(f, 0) + varint(n)
def ld(f, b):
    if isinstance(b, str): b = b.encode()
    return key(f, 2) + varint(len(b)) + b
def f32(f, x): return key(f, 5) + struct.pack('<f', x)
FMT = {1: 'f', 11: 'd', 7: 'q', 6: 'i', 9: 'B', 2: 'B', 3: 'b'}
def tensor(name, dt, dims, vals):
    raw = struct.pack('<%d%s' % (len(vals), FMT[dt]), *vals)
    return b''.join(vi(1, d) for d in dims) + vi(2, dt) + ld(8, name) + ld(9, raw)
def attr(name, v):
    if isinstance(v, float): return ld(1, name) + f32(2, v) + vi(20, 1)
    if isinstance(v, int): return ld(1, name) + vi(3, v) + vi(20, 2)
    if isinstance(v, str): return ld(1, name) + ld(4, v) + vi(20, 3)
    if isinstance(v, list): return ld(1, name) + b''.join(vi(8, x) for x in v) + vi(20, 7)
def node(op, ins, outs, **attrs):
    return (b''.join(ld(1, i) for i in ins) + b''.join(ld(2, o) for o in outs) + ld(3, op + '_' + outs[0]) +
            ld(4, op) + b''.join(ld(5, attr(k, v)) for k, v in attrs.items()))
def vinfo(name, dt, dims=None):
    shape = b'' if dims is None else ld(2, b''.join(ld(1, vi(1, d)) for d in dims))
    return ld(1, name) + ld(2, ld(1, vi(1, dt) + shape))
def model(path, nodes, inputs, outputs, inits=(), opset=18):
    g = b''.join(ld(1, n) for n in nodes) + ld(2, 'g') + b''.join(ld(5, t) for t in inits)
    g += b''.join(ld(11, vinfo(*i)) for i in inputs) + b''.join(ld(12, vinfo(o[0], o[1])) for o in outputs)
    m = vi(1, 8) + ld(8, ld(1, '') + vi(2, opset)) + ld(7, g)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    open(path, 'wb').write(m)
def write_tensor(path, name, dt, dims, vals):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    open(path, 'wb').write(tensor(name, dt, dims, vals))
