#!/bin/sh
# Parallel JIT compilation (compiler/jit.c): a graph's loop kernels split
# over several modules, each optimized and compiled on its own thread and
# linked as objects, must compute exactly what the one-module JIT does.
# vgg-small (Winograd convs, BatchNorm) and mlp, 10 steps each, in 1 and 3
# parts: the same losses (exact strings) and byte-identical trained models;
# and a trainer from `matc compile` in 3 parts gives them too.
# usage: jit_parts.sh MATC SRCDIR
matc=$1 src=$2
. "$(dirname "$0")/scratch.sh"
for model in vgg-small mlp; do
  o="--data idx:/usr/share/datasets/fashion-mnist --batch 16 --steps 10 --eval-fraction 0.01 --eval-every 5"
  for parts in 1 3; do
    MATC_JIT_PARTS=$parts "$matc" train "$src/models/$model/model.onnx" $o --log p$parts.jsonl --out p$parts.onnx \
      2> p$parts.err || { cat p$parts.err; fail "$model in $parts parts"; }
    grep -q "in $parts part" p$parts.err || { cat p$parts.err; fail "$model: not compiled in $parts parts"; }
    nolog p$parts.jsonl > p$parts.txt
  done
  cmp -s p1.txt p3.txt || { diff p1.txt p3.txt | head; fail "$model: losses differ between 1 and 3 parts"; }
  cmp -s p1.onnx p3.onnx || fail "$model: trained models differ between 1 and 3 parts"
  echo "ok $model: 1 and 3 parts give the same $(wc -l < p1.txt) log lines and trained model"
done
# matc compile in 3 parts: one object file per part, and the trainer
# computes what the JIT did (mlp, the last model above).
MATC_JIT_PARTS=3 MATC_KEEP_TMP=1 TMPDIR="$tmp" "$matc" compile "$src/models/mlp/model.onnx" $o -o trainer -v \
  2> c.err || { cat c.err; fail "matc compile in 3 parts"; }
grep -q "entry_0_2.o" c.err || { cat c.err; fail "matc compile did not link 3 parts"; }
./trainer $o --log t.jsonl --out t.onnx 2> t.err || { cat t.err; fail "the trainer"; }
nolog t.jsonl > t.txt
cmp -s p1.txt t.txt || { diff p1.txt t.txt | head; fail "trainer's losses differ from the JIT's"; }
cmp -s p1.onnx t.onnx || fail "trainer's model differs from the JIT's"
echo "ok matc compile in 3 parts: the trainer gives the JIT's losses and model"
