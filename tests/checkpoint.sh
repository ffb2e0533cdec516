#!/bin/sh
# Checkpoints, resuming and --out (README, "Training"):
#  1. 2N steps in one run == N steps + checkpoint + --resume for N more:
#     the same JSONL losses (exact strings) and byte-identical checkpoints.
#  2. SIGINT mid-run (AdamW, warm-up + cosine): the run finishes its step,
#     writes a checkpoint and exits 130; resuming it reproduces the
#     uninterrupted run's losses exactly.
#  3. SIGKILL mid-run leaves a valid checkpoint (atomic writes).
#  4. --out TRAINED.onnx: runs under `matc run`, differs from the original,
#     and gives the evaluation loss the trained parameters gave in training;
#     onnx.checker accepts it when python3 has the onnx module.
# usage: checkpoint.sh MATC SRCDIR
matc=$1 src=$2
model=$src/models/mlp/model.onnx
data="--data pb:$src/tests/train/mlp/data --batch 4 --eval-fraction 0"
. "$(dirname "$0")/scratch.sh"

# 1. N + N == 2N (SGD with Nesterov momentum, weight decay, warm-up).
opts="$data --optimizer sgd --lr 0.02 --momentum 0.9 --nesterov --weight-decay 1e-3 --warmup 10 --seed 7"
"$matc" train "$model" $opts --steps 60 --log a.jsonl --checkpoint A 2>a.err || { cat a.err; fail "2N run"; }
"$matc" train "$model" $opts --steps 30 --log b.jsonl --checkpoint B 2>b.err || { cat b.err; fail "N run"; }
grep -q '^step=30$' B/checkpoint.matc || fail "the checkpoint after 30 steps does not say step=30"
"$matc" train "$model" $opts --steps 60 --log b.jsonl --checkpoint B --resume B 2>b2.err || { cat b2.err; fail "resumed run"; }
grep -q "resuming from B/checkpoint.matc at step 30" b2.err || { cat b2.err; fail "no resume message"; }
[ "$(wc -l < a.jsonl)" -eq 60 ] || fail "the 2N log has $(wc -l < a.jsonl) lines, not 60"
nolog a.jsonl > a.txt; nolog b.jsonl > b.txt
cmp -s a.txt b.txt || { diff a.txt b.txt | head; fail "N + N steps' losses differ from 2N steps'"; }
cmp A/checkpoint.matc B/checkpoint.matc || fail "the final checkpoints differ"
[ ! -e B/checkpoint.matc.tmp ] || fail "a temporary checkpoint file was left behind"
echo "ok   resume: 30 + 30 steps == 60 steps (losses and checkpoint bytes)"

# 2. SIGINT, then resume (AdamW, warm-up then cosine decay over --steps).
opts="$data --optimizer adamw --lr 0.003 --weight-decay 0.01 --warmup 20 --schedule cosine --steps 3000"
"$matc" train "$model" $opts --log u.jsonl 2>u.err || { cat u.err; fail "uninterrupted run"; }
"$matc" train "$model" $opts --log r.jsonl --checkpoint R --checkpoint-every 1000000 2>r.err &
pid=$!
i=0
while [ "$(cat r.jsonl 2>/dev/null | wc -l)" -lt 20 ] && [ $i -lt 600 ]; do sleep 0.05; i=$((i+1)); done
kill -INT $pid
wait $pid
rc=$?
[ $rc -eq 130 ] || { cat r.err; fail "SIGINT: exit $rc, expected 130"; }
grep -q "interrupted (SIGINT) after step" r.err || { cat r.err; fail "SIGINT: no message"; }
n=$(wc -l < r.jsonl)
grep -q "^step=$n\$" R/checkpoint.matc || fail "SIGINT: the log has $n steps but the checkpoint says $(grep -a '^step=' R/checkpoint.matc)"
"$matc" train "$model" $opts --log r.jsonl --checkpoint R --resume R 2>r2.err || { cat r2.err; fail "resume after SIGINT"; }
nolog u.jsonl > u.txt; nolog r.jsonl > r.txt
cmp -s u.txt r.txt || { diff u.txt r.txt | head; fail "interrupted + resumed losses differ from the uninterrupted run's"; }
echo "ok   SIGINT after step $n: exit 130, checkpoint; resumed to 3000 steps, losses identical"

# 3. SIGKILL while checkpointing every step: the checkpoint left is whole.
"$matc" train "$model" $data --steps 100000 --momentum 0.9 --log k.jsonl --checkpoint K --checkpoint-every 1 2>k.err &
pid=$!
i=0
while [ ! -f K/checkpoint.matc ] && [ $i -lt 600 ]; do sleep 0.05; i=$((i+1)); done
sleep 0.3
kill -KILL $pid
wait $pid 2>/dev/null
"$matc" train "$model" $data --momentum 0.9 --resume K --steps 0 2>k2.err || { cat k2.err; fail "resume after SIGKILL"; }
grep -q "nothing to train" k2.err || { cat k2.err; fail "resume after SIGKILL: unexpected output"; }
echo "ok   SIGKILL while checkpointing: $(grep -a '^step=' K/checkpoint.matc) resumes"

# 4. --out TRAINED.onnx.
opts="--data pb:$src/tests/train/mlp/data --batch 4 --eval-fraction 0.25 --momentum 0.9 --seed 3"
"$matc" train "$model" $opts --steps 60 --eval-every 60 --log t.jsonl --out trained.onnx 2>t.err || { cat t.err; fail "--out run"; }
[ -f trained.onnx ] && [ ! -e trained.onnx.tmp ] || fail "--out: no trained.onnx"
"$matc" run "$model" --data "$src/models/mlp/test_data_set_0" >/dev/null 2>&1 || fail "the original model fails its reference"
"$matc" run trained.onnx --data "$src/models/mlp/test_data_set_0" > run.out 2>&1
rc=$?
[ $rc -eq 1 ] && grep -q MISMATCH run.out || { cat run.out; fail "the trained model's outputs (exit $rc) should differ from the original's"; }
mkdir in && cp "$src/models/mlp/test_data_set_0/input_0.pb" in/
"$matc" run trained.onnx --data in > run2.out 2>&1 || { cat run2.out; fail "matc run trained.onnx"; }
# Evaluating trained.onnx (one step at lr 0 leaves SGD's parameters as they
# are) gives the evaluation loss the trained parameters gave in training.
"$matc" train trained.onnx $opts --steps 1 --lr 0 --eval-every 1 --log t2.jsonl 2>t2.err || { cat t2.err; fail "training trained.onnx"; }
want=$(grep eval_loss t.jsonl | sed 's/.*"eval_loss":\([^,]*\),.*/\1/'); got=$(grep eval_loss t2.jsonl | sed 's/.*"eval_loss":\([^,]*\),.*/\1/')
[ -n "$want" ] && [ "$want" = "$got" ] || fail "trained.onnx evaluates to $got, the trained parameters to $want"
echo "ok   --out: trained.onnx runs, differs from the original, evaluates like the trained parameters ($got)"
if /usr/bin/python3 -c 'import onnx' 2>/dev/null; then
  /usr/bin/python3 -c 'import onnx, sys; onnx.checker.check_model(onnx.load(sys.argv[1]), full_check=True)' trained.onnx \
    || fail "onnx.checker rejects trained.onnx"
  echo "ok   --out: onnx.checker accepts trained.onnx"
else
  echo "skip onnx.checker (python3 has no onnx module)"
fi
echo "all checkpoint tests passed"
