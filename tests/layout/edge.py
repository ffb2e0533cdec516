# Edge cases of the layout ops that the ONNX backend tests miss (wrap and
# repeated-reflect pads, clamped slices, out-of-range gathers, scatter
# reductions...), as small models with pure-Python references.
# usage: python3 tests/layout/edge.py build/matc
import sys, itertools, math, subprocess, os, shutil, tempfile
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from onnxw import *
F, D64, I64, I32, B = 1, 11, 7, 6, 9
ROOT = tempfile.mkdtemp(prefix='matc-layout-')
def strides(sh):
    s, out = 1, []
    for d in reversed(sh): out.insert(0, s); s *= d
    return out
def idxs(sh): return itertools.product(*[range(d) for d in sh])
def at(vals, sh, ix): return vals[sum(i * s for i, s in zip(ix, strides(sh)))]
def numel(sh): return math.prod(sh)
def rnd(n, dt=F): return [float((i * 37) % 23 - 11) / 2 for i in range(n)] if dt in (F, D64) else [(i * 37) % 23 - 11 for i in range(n)]
cases = []
def case(name, nodes, ins, outs, inits=(), opset=18):
    """ins: (name, dt, dims, vals) graph inputs; outs: (name, dt, dims, vals) expected."""
    d = f'{ROOT}/{name}'
    model(f'{d}/model.onnx', nodes, [(i[0], i[1], i[2]) for i in ins], [(o[0], o[1]) for o in outs], inits, opset)
    for k, (nm, dt, dims, vals) in enumerate(ins): write_tensor(f'{d}/test_data_set_0/input_{k}.pb', nm, dt, dims, vals)
    for k, (nm, dt, dims, vals) in enumerate(outs): write_tensor(f'{d}/test_data_set_0/output_{k}.pb', nm, dt, dims, vals)
    cases.append(name)

# ---- Pad
def np_pad(x, sh, pads, mode, cv=0.0):
    r = len(sh); pb, pe = pads[:r], pads[r:]
    osh = [sh[i] + pb[i] + pe[i] for i in range(r)]
    out = []
    for oi in idxs(osh):
        src = []
        inside = True
        for i in range(r):
            j, d = oi[i] - pb[i], sh[i]
            if 0 <= j < d: src.append(j); continue
            inside = False
            if mode == 'edge': j = min(max(j, 0), d - 1)
            elif mode == 'wrap': j %= d
            elif mode == 'reflect':
                p = 2 * (d - 1)
                if p == 0: j = 0
                else:
                    j %= p
                    if j >= d: j = p - j
            src.append(j)
        out.append(cv if (mode == 'constant' and not inside) else at(x, sh, src))
    return osh, out
sh = [3, 4]; x = rnd(12)
for mode, pads in [('reflect', [2, 5, 4, 7]), ('edge', [1, 0, 2, 3]), ('wrap', [2, 3, 1, 5]), ('constant', [-1, 2, 1, -2])]:
    osh, y = np_pad(x, sh, pads, mode, 1.5)
    case(f'pad_{mode}', [node('Pad', ['X', 'p', 'c'], ['Y'], mode=mode)], [('X', F, sh, x)], [('Y', F, osh, y)],
         [tensor('p', I64, [4], pads), tensor('c', F, [], [1.5])], opset=19)
# axes input (opset 18), negative axis, 3-D
sh3 = [2, 3, 4]; x3 = rnd(24)
osh, y = np_pad(x3, sh3, [0, 0, 2, 0, 0, 1], 'constant', 0.0)
case('pad_axes', [node('Pad', ['X', 'p', '', 'a'], ['Y'])], [('X', F, sh3, x3)], [('Y', F, osh, y)],
     [tensor('p', I64, [2], [2, 1]), tensor('a', I64, [1], [-1])], opset=18)
# opset 2 attribute form
osh, y = np_pad(x, sh, [1, 1, 0, 2], 'constant', -3.0)
case('pad_v2', [node('Pad', ['X'], ['Y'], pads=[1, 1, 0, 2], value=-3.0)], [('X', F, sh, x)], [('Y', F, osh, y)], opset=2)

# ---- Slice
def np_slice(x, sh, starts, ends, axes, steps):
    r = len(sh); sel = [list(range(d)) for d in sh]
    for s, e, a, k in zip(starts, ends, axes, steps):
        a %= r
        sel[a] = list(range(sh[a]))[slice(s, e, k)]
    osh = [len(s) for s in sel]
    return osh, [at(x, sh, ix) for ix in itertools.product(*sel)]
sh = [5, 6, 7]; x = rnd(210)
for nm, (s, e, a, k) in {'negstep': ([10, -2], [-100, 0], [1, -1], [-2, -3]),
                         'big': ([-100, 2], [2**63 - 1, 2**62], [0, 2], [1, 2]),
                         'empty': ([3], [1], [0], [1])}.items():
    osh, y = np_slice(x, sh, s, e, a, k)
    n = len(s)
    case(f'slice_{nm}', [node('Slice', ['X', 's', 'e', 'a', 'k'], ['Y'])], [('X', F, sh, x)], [('Y', F, osh, y)],
         [tensor('s', I64, [n], s), tensor('e', I64, [n], e), tensor('a', I64, [n], a), tensor('k', I64, [n], k)])
osh, y = np_slice(x, sh, [1, -3], [3, 100], [0, 2], [1, 1])
case('slice_v9', [node('Slice', ['X'], ['Y'], starts=[1, -3], ends=[3, 100], axes=[0, 2])], [('X', F, sh, x)], [('Y', F, osh, y)], opset=9)
osh, y = np_slice(x, sh, [2], [3], [0], [1])   # contiguous: a view
case('slice_view', [node('Slice', ['X', 's', 'e'], ['Y']), node('Relu', ['Y'], ['Z'])], [('X', F, sh, x)],
     [('Z', F, osh, [max(v, 0) for v in y])], [tensor('s', I64, [1], [2]), tensor('e', I64, [1], [3])])

# ---- Split
sh = [7, 3]; x = rnd(21)
def rows(a, b): return x[a * 3:b * 3]
case('split_uneven', [node('Split', ['X'], ['A', 'B', 'C'], num_outputs=3)], [('X', F, sh, x)],
     [('A', F, [3, 3], rows(0, 3)), ('B', F, [3, 3], rows(3, 6)), ('C', F, [1, 3], rows(6, 7))])
case('split_attr', [node('Split', ['X'], ['A', 'B'], split=[2, 5])], [('X', F, sh, x)],
     [('A', F, [2, 3], rows(0, 2)), ('B', F, [5, 3], rows(2, 7))], opset=11)
cols = lambda a, b: [x[i * 3 + j] for i in range(7) for j in range(a, b)]
case('split_input_axis1', [node('Split', ['X', 's'], ['A', 'B'], axis=-1)], [('X', F, sh, x)],
     [('A', F, [7, 1], cols(0, 1)), ('B', F, [7, 2], cols(1, 3))], [tensor('s', I64, [2], [1, 2])], opset=13)

# ---- Gather
sh = [5, 4]; x = rnd(20)
case('gather_axis1', [node('Gather', ['X', 'I'], ['Y'], axis=1)], [('X', F, sh, x), ('I', I32, [2, 2], [3, -4, -1, 0])],
     [('Y', F, [5, 2, 2], [x[r * 4 + (c % 4)] for r in range(5) for c in [3, -4, -1, 0]])])
case('gather_scalar', [node('Gather', ['X', 'I'], ['Y'])], [('X', F, sh, x), ('I', I64, [], [-2])], [('Y', F, [4], x[12:16])])
case('gather_oob', [node('Gather', ['X', 'I'], ['Y'])], [('X', F, sh, x), ('I', I64, [3], [100, -100, 2])],
     [('Y', F, [3, 4], x[16:20] + x[0:4] + x[8:12])])   # matc clamps; ONNX says error
# GatherND batch_dims=1
dsh = [2, 3, 4]; dx = rnd(24)
ind = [[[1], [2]], [[0], [-1]]]   # [2,2,1]
y = []
for b in range(2):
    for j in range(2):
        k = ind[b][j][0] % 3
        y += dx[b * 12 + k * 4: b * 12 + k * 4 + 4]
case('gathernd_b1', [node('GatherND', ['X', 'I'], ['Y'], batch_dims=1)], [('X', F, dsh, dx), ('I', I64, [2, 2, 1], [1, 2, 0, -1])],
     [('Y', F, [2, 2, 4], y)])
# GatherElements negative, axis 0 with smaller indices
ge_i = [-1, 0, 1, 2, -3, 4]   # [2,3] over data [5,4] axis 0
case('gatherelements', [node('GatherElements', ['X', 'I'], ['Y'], axis=0)], [('X', F, sh, x), ('I', I64, [2, 3], ge_i)],
     [('Y', F, [2, 3], [x[(ge_i[i * 3 + j] % 5) * 4 + j] for i in range(2) for j in range(3)])])

# ---- Scatter
for red in ['none', 'add', 'mul', 'max', 'min']:
    data = rnd(12); idx = [1, -3, 1, 0, 2, 2]; upd = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0]   # data [3,4], idx [3,2] axis 0... use axis 1
    out = list(data)
    for i in range(3):
        for j in range(2):
            c = idx[i * 2 + j] % 4; o = i * 4 + c; u = upd[i * 2 + j]
            out[o] = {'none': u, 'add': out[o] + u, 'mul': out[o] * u, 'max': max(out[o], u), 'min': min(out[o], u)}[red]
    if red == 'none': idx = [1, -3, 2, 0, 2, 3]; out = list(data); [out.__setitem__(i * 4 + idx[i * 2 + j] % 4, upd[i * 2 + j]) for i in range(3) for j in range(2)]
    kw = {} if red == 'none' else {'reduction': red}
    case(f'scatterel_{red}', [node('ScatterElements', ['X', 'I', 'U'], ['Y'], axis=1, **kw)],
         [('X', F, [3, 4], data), ('I', I64, [3, 2], idx), ('U', F, [3, 2], upd)], [('Y', F, [3, 4], out)])
data = rnd(24); out = list(data)   # [4,3,2], indices [[1],[-1],[1]] updates [3,3,2]
upd = [float(i) for i in range(18)]
for n, r in enumerate([1, 3, 1]):
    for e in range(6): out[r * 6 + e] += upd[n * 6 + e]
case('scatternd_add', [node('ScatterND', ['X', 'I', 'U'], ['Y'], reduction='add')],
     [('X', F, [4, 3, 2], data), ('I', I64, [3, 1], [1, -1, 1]), ('U', F, [3, 3, 2], upd)], [('Y', F, [4, 3, 2], out)])

# ---- OneHot axis 0, negative and float indices
ind = [0.0, -1.0, 2.7, 7.0]; depth = 4
y = [(5.0 if (int(ind[j]) % depth if int(ind[j]) < 0 else int(ind[j])) == d else -1.0) for d in range(depth) for j in range(4)]
case('onehot_axis0', [node('OneHot', ['I', 'd', 'v'], ['Y'], axis=0)], [('I', F, [4], ind)], [('Y', F, [depth, 4], y)],
     [tensor('d', I64, [], [depth]), tensor('v', F, [2], [-1.0, 5.0])])

# ---- Tile / Expand
sh = [2, 1, 3]; x = rnd(6); rep = [2, 3, 1]
osh = [a * b for a, b in zip(sh, rep)]
case('tile3d', [node('Tile', ['X', 'r'], ['Y'])], [('X', F, sh, x)],
     [('Y', F, osh, [at(x, sh, [i % d for i, d in zip(ix, sh)]) for ix in idxs(osh)])], [tensor('r', I64, [3], rep)])
osh = [2, 2, 4, 3]
case('expand_rank', [node('Expand', ['X', 's'], ['Y'])], [('X', F, sh, x)],
     [('Y', F, osh, [at(x, sh, [ix[1], 0, ix[3]]) for ix in idxs(osh)])], [tensor('s', I64, [4], [2, 1, 4, 1])])

# ---- constants: Compress, NonZero, Range, ConstantOfShape
sh = [3, 4]; x = rnd(12)
case('compress_const', [node('Compress', ['X', 'c'], ['Y'], axis=1)], [('X', F, sh, x)],
     [('Y', F, [3, 3], [x[r * 4 + c] for r in range(3) for c in [0, 2, 3]])], [tensor('c', B, [4], [1, 0, 1, 1])])
case('compress_flat', [node('Compress', ['X', 'c'], ['Y'])], [('X', F, sh, x)],
     [('Y', F, [2], [x[1], x[5]])], [tensor('c', B, [6], [0, 1, 0, 0, 0, 1])])
nz = [0, 3, 0, 1, 1, 0]
case('nonzero_const', [node('NonZero', ['c'], ['Y']), node('Add', ['Y', 'Z'], ['W'])], [('Z', I64, [], [0])],
     [('W', I64, [2, 3], [0, 1, 1, 1, 0, 1])], [tensor('c', I64, [2, 3], nz)])
case('range_runtime', [node('Range', ['a', 'b', 'c'], ['Y'])], [('a', I32, [], [10]), ('b', I32, [], [-3]), ('c', I32, [], [-4])],
     [('Y', I32, [4], [10, 6, 2, -2])])
case('range_float', [node('Range', ['a', 'b', 'c'], ['Y'])], [('a', F, [], [0.5]), ('b', F, [], [2.0]), ('c', F, [], [0.25])],
     [('Y', F, [6], [0.5, 0.75, 1.0, 1.25, 1.5, 1.75])])
cos_node = (ld(1, 's') + ld(2, 'Y') + ld(3, 'cos') + ld(4, 'ConstantOfShape') +
            ld(5, ld(1, 'value') + ld(5, tensor('v', I32, [1], [7])) + vi(20, 4)))   # tensor attribute
case('cos_int', [cos_node,
                 node('Add', ['Y', 'Z'], ['W'])], [('Z', I32, [], [1])], [('W', I32, [2, 3], [8] * 6)], [tensor('s', I64, [2], [2, 3])])

# ---- Trilu, EyeLike, ReverseSequence, Concat with empty, Transpose view
sh = [2, 3, 4]; x = rnd(24)
case('trilu_lower_k', [node('Trilu', ['X', 'k'], ['Y'], upper=0)], [('X', F, sh, x), ('k', I64, [], [-1])],
     [('Y', F, sh, [x[i] if ix[2] - ix[1] <= -1 else 0.0 for i, ix in enumerate(idxs(sh))])])
case('eyelike_k', [node('EyeLike', ['X'], ['Y'], k=-1, dtype=I32)], [('X', F, [3, 4], rnd(12))],
     [('Y', I32, [3, 4], [1 if c - r == -1 else 0 for r in range(3) for c in range(4)])])
sh = [4, 3, 2]; x = rnd(24); lens = [4, 1, 3]
y = [at(x, sh, [(lens[b] - 1 - t if t < lens[b] else t), b, e]) for t, b, e in idxs(sh)]
case('reversesequence', [node('ReverseSequence', ['X', 'L'], ['Y'], time_axis=0, batch_axis=1)],
     [('X', F, sh, x), ('L', I64, [3], lens)], [('Y', F, sh, y)])
a = rnd(6); 
case('concat_empty', [node('Concat', ['A', 'E', 'A'], ['Y'], axis=1)], [('A', F, [2, 3], a), ('E', F, [2, 0], [])],
     [('Y', F, [2, 6], a[0:3] + a[0:3] + a[3:6] + a[3:6])])
case('transpose_view', [node('Transpose', ['X'], ['Y'], perm=[1, 0, 2])], [('X', F, [1, 3, 2], a)], [('Y', F, [3, 1, 2], a)])

matc = sys.argv[1]
bad = 0
for c in cases:
    r = subprocess.run(['sh', os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', 'run_onnx_test.sh'), matc, f'{ROOT}/{c}'], capture_output=True, text=True)
    if r.returncode != 0:
        bad += 1
        print(f'{c}: rc={r.returncode}\n{r.stdout[-600:]}{r.stderr[-600:]}')
print(f'{len(cases) - bad}/{len(cases)} edge cases pass')
shutil.rmtree(ROOT, ignore_errors=True)
sys.exit(1 if bad else 0)
