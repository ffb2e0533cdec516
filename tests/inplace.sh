#!/bin/sh
# Optimizer updates in place (passes/assign_in_place.c): with SGD momentum
# and with AdamW the training step keeps no Assign copy, and 20 steps give
# the same losses (exact strings) and the same trained model as with
# MATC_NO_INPLACE=1, which keeps every copy.
# usage: inplace.sh MATC SRCDIR
matc=$1 src=$2
model=$src/models/mlp/model.onnx
data="--data pb:$src/tests/train/mlp/data --batch 4 --eval-fraction 0 --steps 20"
. "$(dirname "$0")/scratch.sh"
for opt in "sgd --momentum 0.9 --weight-decay 1e-3" "adamw --weight-decay 0.01"; do
  o="$data --optimizer $opt --lr 0.01"
  "$matc" train "$model" $o --dump-after=assign-in-place > dump.txt 2>&1 || { cat dump.txt; fail "dump ($opt)"; }
  copies=$(grep -c '^  k[0-9]* (grad//Assign)' dump.txt)
  [ "$copies" -eq 0 ] || fail "$copies Assign copies left ($opt)"
  MATC_NO_INPLACE=1 "$matc" train "$model" $o --dump-after=assign-in-place > dump0.txt 2>&1 || { cat dump0.txt; fail "dump without ($opt)"; }
  kept=$(grep -c '^  k[0-9]* (grad//Assign)' dump0.txt)
  [ "$kept" -ge 12 ] || fail "only $kept Assign copies with MATC_NO_INPLACE=1 ($opt)"
  "$matc" train "$model" $o --log a.jsonl --out a.onnx 2>a.err || { cat a.err; fail "in place ($opt)"; }
  MATC_NO_INPLACE=1 "$matc" train "$model" $o --log b.jsonl --out b.onnx 2>b.err || { cat b.err; fail "copies ($opt)"; }
  nolog a.jsonl > a.txt; nolog b.jsonl > b.txt
  cmp -s a.txt b.txt || { diff a.txt b.txt | head; fail "losses differ ($opt)"; }
  cmp -s a.onnx b.onnx || fail "trained models differ ($opt)"
  echo "ok ($opt): $kept Assign copies -> 0, same 20 losses and trained model"
done
