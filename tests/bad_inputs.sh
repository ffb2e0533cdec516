#!/bin/sh
# Bad input must give a clear error that names the file (and the node, op
# and input where there is one), exit non-zero, and never crash or hang (no
# signal, no sanitizer report, done within 120 s).
# usage: bad_inputs.sh MATC DATADIR
matc=$1 data=$2
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
failures=0 passes=0
limit=""
command -v timeout > /dev/null && limit="timeout 120"

# expect NAME EXPECTED_RC PATTERN... -- ARGS...
expect() {
  name=$1 want=$2; shift 2
  pats=""
  while [ "$1" != "--" ]; do pats="$pats
$1"; shift; done
  shift
  $limit "$matc" "$@" > "$tmp/out" 2>&1
  rc=$?
  ok=1
  if [ $rc -ne "$want" ]; then echo "FAIL $name: exit $rc, expected $want"; ok=0; fi
  if grep -q -E 'AddressSanitizer|LeakSanitizer|runtime error|Segmentation|internal error' "$tmp/out"; then
    echo "FAIL $name: crash or sanitizer report"; ok=0
  fi
  printf '%s\n' "$pats" | while IFS= read -r p; do
    [ -z "$p" ] && continue
    grep -q -F -- "$p" "$tmp/out" || { echo "FAIL $name: message lacks '$p'"; echo x >> "$tmp/miss"; }
  done
  if [ -f "$tmp/miss" ]; then ok=0; rm -f "$tmp/miss"; fi
  if [ $ok -eq 1 ]; then passes=$((passes+1)); echo "ok   $name"; else failures=$((failures+1)); sed 's/^/     | /' "$tmp/out"; fi
}

: > "$tmp/empty.onnx"
head -c 100 "$data/good.onnx" > "$tmp/truncated.onnx"
head -c 4096 /dev/urandom > "$tmp/random.onnx" 2>/dev/null || dd if=/dev/urandom of="$tmp/random.onnx" bs=4096 count=1 2>/dev/null
head -c 10 "$data/good_data/input_0.pb" > "$tmp/trunc_input.pb"
mkdir -p "$tmp/trunc_data" && cp "$tmp/trunc_input.pb" "$tmp/trunc_data/input_0.pb"

expect empty-file 1 "$tmp/empty.onnx" "empty" -- inspect "$tmp/empty.onnx"
expect truncated-file 1 "$tmp/truncated.onnx" "truncated" -- inspect "$tmp/truncated.onnx"
expect random-bytes 1 "$tmp/random.onnx" -- inspect "$tmp/random.onnx"
expect missing-file 1 "no_such_model.onnx" "cannot open" -- inspect "$tmp/no_such_model.onnx"
expect unknown-op 77 "unknown_op.onnx" "node 'frob'" "FrobnicateTensor" -- inspect "$data/unknown_op.onnx"
expect missing-initializer 1 "missing_initializer.onnx" "node 'mm'" "MatMul" "'w'" -- inspect "$data/missing_initializer.onnx"
expect shape-mismatch 1 "shape_mismatch.onnx" "node 'mm'" "MatMul" "input 1" "4 vs 5" -- inspect "$data/shape_mismatch.onnx"
expect wrong-input-shape 1 "input 'x'" "dimension 1" "5" -- run "$data/good.onnx" --data "$data/wrong_shape"
expect wrong-input-dtype 1 "input 'x'" "int64" "float32" -- run "$data/good.onnx" --data "$data/wrong_dtype"
expect truncated-input 1 "input_0.pb" -- run "$data/good.onnx" --data "$tmp/trunc_data"
expect missing-data-dir 1 "no input_0.pb" -- run "$data/good.onnx" --data "$tmp/nonexistent"
expect good-model 0 "output 'y'" -- run "$data/good.onnx" --data "$data/good_data"
expect no-grad-rule 77 "no_grad_rule.onnx" "node 'diag'" "Einsum" "input 1 'd'" "no gradient" -- gradcheck "$data/no_grad_rule.onnx" --data "$data/bad_grad_diag"
expect grad-unknown-name 1 "grad_0.pb" "'nope'" "not an initializer" -- gradcheck "$data/good.onnx" --data "$data/bad_grad_name"
expect grad-wrong-shape 1 "grad_0.pb" "shape does not match" "'w'" -- gradcheck "$data/good.onnx" --data "$data/bad_grad_shape"
expect grad-good 0 "grad 'w'" "ok" -- gradcheck "$data/good.onnx" --data "$data/grad_data"

models=$data/../../../models
trainref=$data/../../train/mlp/data
expect train-missing-data 1 "/nonexistent" "missing" -- train "$models/mlp/model.onnx" --data idx:/nonexistent --steps 2
expect train-wrong-data 1 "input 'input'" "float32" "int64" -- train "$models/mlp/model.onnx" --data "text:$data/../../layout:causal:16" --steps 2
expect train-nan-loss 1 "step 3" "the loss is" "first non-finite value" "node '/fc2/Gemm' (Gemm)" -- train "$models/mlp/model.onnx" --data "pb:$trainref" --steps 20 --batch 4 --lr 1e12 --momentum 0.9 --eval-fraction 0
expect train-nan-keeps-checkpoint 1 "step 3" "the last checkpoint" "step 2) is kept" -- train "$models/mlp/model.onnx" --data "pb:$trainref" --steps 20 --batch 4 --lr 1e12 --momentum 0.9 --eval-fraction 0 --checkpoint "$tmp/cknan" --checkpoint-every 1
grep -q '^step=2$' "$tmp/cknan/checkpoint.matc" && echo "ok   train-nan-checkpoint-is-step-2" || { echo "FAIL train-nan-checkpoint-is-step-2"; failures=$((failures + 1)); }

# Checkpoints (--resume): missing, truncated, damaged, another model's, another optimizer's.
mlp="$models/mlp/model.onnx"
mlpdata="--data pb:$trainref --batch 4 --eval-fraction 0"
"$matc" train "$mlp" $mlpdata --steps 2 --momentum 0.9 --checkpoint "$tmp/ck" > /dev/null 2>&1
mkdir -p "$tmp/ck_trunc" "$tmp/ck_flip"
head -c 100000 "$tmp/ck/checkpoint.matc" > "$tmp/ck_trunc/checkpoint.matc"
head -c 40 "$tmp/ck/checkpoint.matc" > "$tmp/ck_short"
cp "$tmp/ck/checkpoint.matc" "$tmp/ck_flip/checkpoint.matc"
printf 'X' | dd of="$tmp/ck_flip/checkpoint.matc" bs=1 seek=5000 conv=notrunc 2>/dev/null
# A tiny other model trained on NPY zeros written here (MSE on good.onnx).
npy() { printf '\223NUMPY\001\000\166\000'; printf "%-117s\n" "{'descr': '<f4', 'fortran_order': False, 'shape': ($1, $2), }"; head -c $(($1*$2*4)) /dev/zero; }
npy 2 4 > "$tmp/x.npy"; npy 2 3 > "$tmp/y.npy"
"$matc" train "$data/good.onnx" --data "npy:$tmp/x.npy,$tmp/y.npy" --batch 2 --eval-fraction 0 --steps 2 --checkpoint "$tmp/ck_other" > /dev/null 2>&1
expect resume-missing-dir 1 "$tmp/no_such_ckpt" "no such checkpoint directory" -- train "$mlp" $mlpdata --resume "$tmp/no_such_ckpt"
expect resume-empty-dir 1 "no checkpoint" "checkpoint.matc" -- train "$mlp" $mlpdata --resume "$data"
expect resume-truncated 1 "ck_trunc/checkpoint.matc" "truncated" -- train "$mlp" $mlpdata --resume "$tmp/ck_trunc"
expect resume-short 1 "ck_short" "truncated" -- train "$mlp" $mlpdata --resume "$tmp/ck_short"
expect resume-damaged 1 "ck_flip/checkpoint.matc" "checksum" -- train "$mlp" $mlpdata --resume "$tmp/ck_flip"
expect resume-not-a-checkpoint 1 "not a matc checkpoint" -- train "$mlp" $mlpdata --resume "$data/good.onnx"
expect resume-other-model 1 "written for model" "good.onnx" "not for" "models/mlp/model.onnx" -- train "$mlp" $mlpdata --resume "$tmp/ck_other"
expect resume-other-optimizer 1 "checkpoint.matc" "momentum" "--optimizer sgd" -- train "$mlp" $mlpdata --optimizer adamw --resume "$tmp/ck"
expect resume-other-data 1 "80 training examples" "gives 60" -- train "$mlp" --data "pb:$trainref" --batch 4 --eval-fraction 0.25 --momentum 0.9 --resume "$tmp/ck"
expect resume-good 0 "resuming from" "at step 2" -- train "$mlp" $mlpdata --steps 3 --momentum 0.9 --resume "$tmp/ck"
# Labels the model's 10 classes cannot hold; a model with nothing left to train; an --eval-data that
# does not match --data.
npyhdr() { printf '\223NUMPY\001\000\166\000'; printf "%-117s\n" "{'descr': '$1', 'fortran_order': False, 'shape': ($2), }"; }
{ npyhdr '<f4' '2, 1, 28, 28'; head -c 6272 /dev/zero; } > "$tmp/img.npy"
{ npyhdr '<i8' '2,'; printf '\003\0\0\0\0\0\0\0\014\0\0\0\0\0\0\0'; } > "$tmp/lab12.npy"
expect train-label-out-of-range 1 "lab12.npy" "target 12" "10 classes" -- train "$mlp" --data "npy:$tmp/img.npy,$tmp/lab12.npy" --batch 2 --eval-fraction 0 --steps 1
expect train-no-trainable 1 "no trainable parameter" "--freeze" -- train "$mlp" $mlpdata --steps 1 --freeze fc1.weight,fc1.bias,fc2.weight,fc2.bias,fc3.weight,fc3.bias
expect train-eval-data-mismatch 1 "--eval-data" "differ in shape" -- train "$mlp" $mlpdata --steps 1 --eval-data "npy:$tmp/x.npy,$tmp/y.npy"
expect checkpoint-not-a-dir 1 "--checkpoint" "good.onnx" -- train "$mlp" $mlpdata --steps 1 --checkpoint "$data/good.onnx"
expect out-unwritable 1 "--out" "/nonexistent_dir/t.onnx" -- train "$mlp" $mlpdata --steps 1 --out /nonexistent_dir/t.onnx

# Limits on untrusted input (README, "Hostile inputs and fuzzing"): each
# refused before anything is allocated from the number, with a message
# naming the file, what passed the limit, and the limit. The inputs are
# written by tests/hostile.py; the huge files are sparse.
h=$tmp/hostile
${PYTHON:-python3} "$(dirname "$0")/hostile.py" "$h"
truncate -s 3G "$tmp/huge.onnx"
expect limit-model-file-size 1 "huge.onnx" "3221225472 bytes" "over the limit of 2147483648 bytes" -- inspect "$tmp/huge.onnx"
expect limit-nesting-types 1 "deep_types.onnx" "nested more than 100 deep" -- inspect "$h/deep_types.onnx"
expect limit-nesting-subgraphs 1 "deep_subgraphs.onnx" "nested more than 100 deep" -- inspect "$h/deep_subgraphs.onnx"
expect limit-messages 1 "messages.onnx" "more than 8388608 protobuf messages" -- inspect "$h/messages.onnx"
expect limit-value-infos 1 "value_infos.onnx" "1048577 value_info entries, over the limit of 1048576" -- inspect "$h/value_infos.onnx"
expect limit-element-overflow 1 "overflow_elems.onnx" "tensor 'w'" "[4294967296,4294967296,4294967296]" "limit of 1099511627776" -- inspect "$h/overflow_elems.onnx"
expect limit-rank 1 "rank9.onnx" "tensor 'w' has rank 9, over the limit of 8" -- inspect "$h/rank9.onnx"
expect limit-input-elements 1 "input_elems.onnx" "input 'x'" "[2147483648,2147483648]" "limit of 1099511627776" -- inspect "$h/input_elems.onnx"
expect limit-dimension-product 1 "expand_elems.onnx" "node 'expand' (Expand)" "[1073741824,1073741824]" "limit of 1099511627776" -- inspect "$h/expand_elems.onnx"
expect limit-attributes 1 "many_attrs.onnx" "'relu'" "300 attributes, over the limit of 256" -- inspect "$h/many_attrs.onnx"
expect limit-attribute-elements 1 "attr_elems.onnx" "node 'tr' (Transpose)" "'perm' has 1048577 elements, over the limit of 1048576" -- inspect "$h/attr_elems.onnx"
expect limit-shape-attribute 1 "perm9.onnx" "node 'tr' (Transpose)" "'perm' has 9 entries, over the limit of 8" -- inspect "$h/perm9.onnx"
expect limit-node-inputs 1 "node_inputs.onnx" "'sum' has 65 inputs" "over the limit of 64" -- inspect "$h/node_inputs.onnx"
expect limit-fold-budget 0 "nodes" -- inspect "$h/fold_budget.onnx"
mkdir -p "$tmp/huge_data"
truncate -s 3G "$tmp/huge_data/input_0.pb"
expect limit-tensor-file-size 1 "huge_data/input_0.pb" "over the limit of 2147483648 bytes" -- run "$data/good.onnx" --data "$tmp/huge_data"
expect limit-tensor-elements 1 "run_elems/input_0.pb" "tensor 'x'" "limit of 1099511627776" -- run "$data/good.onnx" --data "$h/run_elems"
mkdir -p "$tmp/huge_pb/0"
truncate -s 3G "$tmp/huge_pb/0/input_0.pb"
expect limit-pb-file-size 1 "huge_pb/0/input_0.pb" "over the data limit of 2147483648 bytes" -- train "$mlp" --data "pb:$tmp/huge_pb" --steps 1
expect limit-pb-rank 1 "pb_rank9/0/input_0.pb" "rank 9 is over the limit of 8" -- train "$mlp" --data "pb:$h/pb_rank9" --steps 1
expect limit-pb-elements 1 "pb_elems/0/input_0.pb" "[2147483648,1073741824]" "data limit of 8589934592 bytes" -- train "$mlp" --data "pb:$h/pb_elems" --steps 1
expect limit-npy-rank 1 "rank10.npy" "more than 9 dimensions, over the limit" -- train "$mlp" --data "npy:$h/rank10.npy,$h/labels.npy" --steps 1
expect limit-npy-elements 1 "elems.npy" "data limit of 8589934592 bytes" -- train "$mlp" --data "npy:$h/elems.npy,$h/labels.npy" --steps 1
expect limit-idx-elements 1 "idx_big/train-images-idx3-ubyte" "65535 images of 65535 x 65535" "data limit of 8589934592 bytes" -- train "$mlp" --data "idx:$h/idx_big" --steps 1
mkdir -p "$tmp/ck_huge"
truncate -s 17G "$tmp/ck_huge/checkpoint.matc"
expect limit-checkpoint-file-size 1 "ck_huge/checkpoint.matc" "over the limit of 17179869184 bytes" -- train "$mlp" $mlpdata --resume "$tmp/ck_huge"
expect limit-checkpoint-rank 1 "ck_rank9/checkpoint.matc" "tensor 0 has rank 9, over the limit of 8" -- train "$mlp" $mlpdata --resume "$h/ck_rank9"

echo "$passes passed, $failures failed"
[ $failures -eq 0 ]
