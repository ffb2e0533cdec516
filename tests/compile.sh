#!/bin/sh
# matc compile (README, "matc compile"):
#  1. mlp, SGD with momentum: the trainer links no LLVM; its 20-step JSONL
#     losses equal `matc train`'s and its --out model is byte-identical to
#     matc train's (so the parameters are equal bit for bit); that model
#     runs under `matc run`; 10 steps + checkpoint + --resume for 10 more
#     give the same log and --out bytes.
#  2. vgg-small (BatchNormalization), AdamW: the same log and --out bytes.
#  3. Errors: a fixed option given another value, data of another shape,
#     a damaged embedded model, a damaged plan fingerprint, compile without
#     -o / --data, an unwritable -o, no C compiler, no trainer library.
# usage: compile.sh MATC SRCDIR
matc=$1 src=$2
. "$(dirname "$0")/scratch.sh"

# 1. mlp
model=$src/models/mlp/model.onnx
data="--data pb:$src/tests/train/mlp/data --batch 4 --eval-fraction 0"
opts="$data --optimizer sgd --lr 0.02 --momentum 0.9 --weight-decay 1e-3 --warmup 5 --seed 3"
"$matc" compile "$model" -o mlp-trainer $opts -v 2>c.err || { cat c.err; fail "compile mlp"; }
[ -x mlp-trainer ] || fail "no executable mlp-trainer"
ldd ./mlp-trainer > ldd.txt || fail "ldd mlp-trainer"
! grep -qi llvm ldd.txt || { cat ldd.txt; fail "the trainer links LLVM"; }
"$matc" train "$model" $opts --steps 20 --log a.jsonl --out a.onnx 2>a.err || { cat a.err; fail "matc train mlp"; }
./mlp-trainer --steps 20 --log b.jsonl --out b.onnx 2>b.err || { cat b.err; fail "trainer mlp"; }
[ "$(wc -l < b.jsonl)" -eq 20 ] || fail "the trainer's log has $(wc -l < b.jsonl) lines, not 20"
grep -qF "training $model:" b.err || { cat b.err; fail "the trainer does not name its model $model"; }
nolog a.jsonl > a.txt; nolog b.jsonl > b.txt
cmp -s a.txt b.txt || { diff a.txt b.txt | head; fail "mlp: the trainer's losses differ from matc train's"; }
cmp a.onnx b.onnx || fail "mlp: the trainer's --out model differs from matc train's"
cmp -s "$model" b.onnx && fail "mlp: --out wrote the untrained model"
mkdir in && cp "$src/models/mlp/test_data_set_0/input_0.pb" in/
"$matc" run b.onnx --data in > run.txt 2>&1 || { cat run.txt; fail "matc run on the trainer's --out model"; }
echo "ok   mlp: no LLVM in ldd, 20 steps == matc train (losses, --out bytes), --out runs"
./mlp-trainer --steps 10 --checkpoint C --log r.jsonl 2>r1.err || { cat r1.err; fail "trainer: 10 steps"; }
./mlp-trainer --steps 20 --checkpoint C --resume C --log r.jsonl --out r.onnx 2>r2.err || { cat r2.err; fail "trainer: resume"; }
grep -q "resuming from C/checkpoint.matc at step 10" r2.err || { cat r2.err; fail "trainer: no resume message"; }
nolog r.jsonl > r.txt
cmp -s a.txt r.txt || { diff a.txt r.txt | head; fail "trainer: 10 + 10 resumed steps' losses differ from 20 steps'"; }
cmp a.onnx r.onnx || fail "trainer: the resumed run's --out model differs"
echo "ok   mlp trainer: 10 steps + checkpoint + --resume == 20 steps"

# 1b. MAT (three graphs: the step with guards, the mNTK probe, evaluation),
# and a trainer for any x86-64 (--target-cpu generic) runs.
opts="$data --optimizer sgd --lr 0.02 --momentum 0.9 --mat on --mat-warmup 3 --mat-refresh 4"
# compiled from a copy that is gone when the trainer runs: it must use
# only its embedded model (the mNTK probe re-imports the model too)
cp "$model" gone.onnx
"$matc" compile gone.onnx -o mat-trainer $opts 2>cm.err || { cat cm.err; fail "compile mlp --mat on"; }
rm gone.onnx
grep -q "3 graphs compiled" cm.err || { cat cm.err; fail "compile --mat on: not 3 graphs"; }
"$matc" train "$model" $opts --steps 20 --log ma.jsonl 2>ma.err || { cat ma.err; fail "matc train --mat on"; }
./mat-trainer --steps 20 --log mb.jsonl 2>mb.err || { cat mb.err; fail "trainer --mat on"; }
grep -qF "training gone.onnx:" mb.err || { cat mb.err; fail "the MAT trainer does not name its model gone.onnx"; }
grep -q lambda mb.jsonl || fail "the MAT trainer's log has no probe"
sed 's/,"ms":[0-9.e+-]*//; s/,"probe_ms":[0-9.e+-]*//' ma.jsonl > ma.txt
sed 's/,"ms":[0-9.e+-]*//; s/,"probe_ms":[0-9.e+-]*//' mb.jsonl > mb.txt
cmp -s ma.txt mb.txt || { diff ma.txt mb.txt | head; fail "MAT: the trainer's log differs from matc train's"; }
"$matc" compile "$model" -o generic-trainer $data --target-cpu generic 2>cg.err || { cat cg.err; fail "compile generic"; }
./generic-trainer --steps 5 --log g.jsonl 2>g.err || { cat g.err; fail "generic trainer"; }
[ "$(wc -l < g.jsonl)" -eq 5 ] || fail "the generic trainer's log has $(wc -l < g.jsonl) lines, not 5"
echo "ok   MAT trainer == matc train --mat on (losses, probes, decisions); --target-cpu generic runs"

# 2. vgg-small with BatchNormalization, AdamW
model=$src/models/vgg-small/model.onnx
opts="--data pb:$src/tests/train/vgg-small/data --batch 4 --eval-fraction 0 --optimizer adamw --lr 0.001 --weight-decay 0.01"
"$matc" compile "$model" -o vgg-trainer $opts 2>cv.err || { cat cv.err; fail "compile vgg-small"; }
"$matc" train "$model" $opts --steps 20 --log va.jsonl --out va.onnx 2>va.err || { cat va.err; fail "matc train vgg-small"; }
./vgg-trainer --steps 20 --log vb.jsonl --out vb.onnx 2>vb.err || { cat vb.err; fail "trainer vgg-small"; }
nolog va.jsonl > va.txt; nolog vb.jsonl > vb.txt
cmp -s va.txt vb.txt || { diff va.txt vb.txt | head; fail "vgg-small: the trainer's losses differ"; }
cmp va.onnx vb.onnx || fail "vgg-small: the trainer's --out model differs from matc train's"
echo "ok   vgg-small (BN, AdamW): 20 steps == matc train (losses, --out bytes)"

# 3. errors: exit status and message
expect() {   # expect STATUS PATTERN command...
  want=$1 pat=$2; shift 2
  "$@" > e.out 2>&1
  rc=$?
  [ $rc -eq "$want" ] || { cat e.out; fail "'$*': exit $rc, expected $want"; }
  grep -q -e "$pat" e.out || { cat e.out; fail "'$*': no message matching '$pat'"; }
}
expect 2 "--momentum 0.5: this trainer was compiled with --momentum 0.9" ./mlp-trainer --momentum 0.5 --steps 1
expect 2 "--batch 8: this trainer was compiled with --batch 4" ./mlp-trainer --batch 8 --steps 1
expect 2 "--nesterov on: this trainer was compiled with --nesterov off" ./mlp-trainer --nesterov --steps 1
expect 2 "--optimizer adamw: this trainer was compiled with --optimizer sgd" ./mlp-trainer --optimizer adamw
expect 2 "-o is an option of matc compile" ./mlp-trainer -o x
echo "ok   trainer: options fixed at compile time are refused with a message"

if command -v python3 > /dev/null; then
  # Flip one byte in the middle of the embedded model, then one bit of
  # graph 0's plan fingerprint (printed by compile -v).
  python3 - "$src/models/mlp/model.onnx" mlp-trainer bad-model <<'EOF' || fail "cannot patch the trainer"
import sys
model, exe = open(sys.argv[1], 'rb').read(), bytearray(open(sys.argv[2], 'rb').read())
at = exe.find(model[len(model) // 2:len(model) // 2 + 64])
assert at > 0 and exe.find(model[len(model) // 2:len(model) // 2 + 64], at + 1) < 0
exe[at + 7] ^= 0x40
open(sys.argv[3], 'wb').write(exe)
EOF
  chmod +x bad-model
  expect 1 "the embedded model is corrupted" ./bad-model --steps 1
  fp=$(sed -n 's/.*graph 0: .*plan fingerprint \([0-9a-f]*\).*/\1/p' c.err)
  [ -n "$fp" ] || { cat c.err; fail "compile -v printed no plan fingerprint"; }
  python3 - "$fp" mlp-trainer bad-plan <<'EOF' || fail "cannot patch the fingerprint"
import sys, struct
key = struct.pack('<Q', int(sys.argv[1], 16))
exe = bytearray(open(sys.argv[2], 'rb').read())
at = exe.find(key)
assert at > 0 and exe.find(key, at + 1) < 0
exe[at] ^= 1
open(sys.argv[3], 'wb').write(exe)
EOF
  chmod +x bad-plan
  expect 1 "graph 0 does not match its compiled code" ./bad-plan --steps 1
  echo "ok   a damaged model or plan in the trainer fails clearly"
  # Data of another shape: mlp's input is [batch, 1, 28, 28]; these are [784].
  python3 - <<'EOF' || fail "cannot write npy data"
import struct
def save(path, descr, shape, values, fmt):
    hdr = "{'descr': '%s', 'fortran_order': False, 'shape': (%s), }" % (descr, ''.join('%d,' % d for d in shape))
    hdr += ' ' * (63 - (len(hdr) + 10) % 64) + '\n'
    with open(path, 'wb') as f:
        f.write(b'\x93NUMPY\x01\x00' + struct.pack('<H', len(hdr)) + hdr.encode())
        f.write(struct.pack('<%d%s' % (len(values), fmt), *values))
save('x.npy', '<f4', (8, 784), [0.5] * (8 * 784), 'f')
save('y.npy', '<i8', (8,), [1] * 8, 'q')
EOF
  expect 1 "input 'input' has rank 4 but the data gives examples of rank 1" ./mlp-trainer --data npy:x.npy,y.npy --steps 1
  echo "ok   data of another shape is refused with a message"
fi

model=$src/models/mlp/model.onnx
expect 2 "compile needs -o TRAINER" "$matc" compile "$model" $data
expect 2 "compile needs --data SPEC" "$matc" compile "$model" -o x
expect 2 "-o is an option of compile" "$matc" train "$model" $data -o x
expect 1 "cannot write in directory /nonexistent" "$matc" compile "$model" -o /nonexistent/dir/t $data
expect 1 "is a directory" "$matc" compile "$model" -o . $data
expect 2 "expected native or generic" "$matc" compile "$model" -o t $data --target-cpu pentium
expect 1 "no C compiler" env CC=no-such-cc "$matc" compile "$model" -o t $data
expect 1 "cannot read the trainer library /nonexistent.a" env MATC_AOT_LIB=/nonexistent.a "$matc" compile "$model" -o t $data
[ ! -e t ] || fail "a failed compile left a trainer behind"
echo "ok   matc compile: missing -o or --data, unwritable -o, no cc, no library"
