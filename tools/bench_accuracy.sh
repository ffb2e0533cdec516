#!/bin/sh
# Accuracy benchmark: trains the bundled image models on Fashion-MNIST
# (Debian's dataset-fashion-mnist) with matc and prints the test accuracy
# (the IDX test split, t10k, 10,000 images) and the time. Targets from the
# trainer issue: mlp >= 88%, vgg-small >= 91%.
# usage: tools/bench_accuracy.sh [mlp] [vgg-small]   (default: both)
set -e
cd "$(dirname "$0")/.."
FM=/usr/share/datasets/fashion-mnist
T=${TMPDIR:-/tmp}/matc-bench-accuracy
mkdir -p "$T"
models=${*:-mlp vgg-small}
for m in $models; do
  case $m in
    mlp) opts="--steps 6000 --batch 64 --optimizer sgd --momentum 0.9 --lr 0.05 --schedule cosine --warmup 100" ;;
    vgg-small) opts="--steps 4000 --batch 64 --optimizer sgd --momentum 0.9 --lr 0.05 --weight-decay 5e-4 --schedule cosine --warmup 200" ;;
    *) echo "unknown model $m" >&2; exit 2 ;;
  esac
  echo "== $m: matc train $opts"
  start=$(date +%s)
  # train on all 60,000 training images, evaluate on the 10,000 test images
  build/matc train models/$m/model.onnx --data idx:$FM:train --eval-data idx:$FM:test --eval-fraction 0 \
    --eval-every 1000 $opts \
    --log "$T/$m.jsonl" 2> "$T/$m.err" || { cat "$T/$m.err"; exit 1; }
  end=$(date +%s)
  tail -n 2 "$T/$m.err"
  echo "$m: $((end - start)) s of training"
done
