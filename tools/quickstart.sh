#!/bin/sh
# The main job on the bundled default: sets up and builds (installing what
# is missing), then trains the bundled mlp on Fashion-MNIST (Debian's
# dataset-fashion-mnist) with matc and prints the result: loss, evaluation
# accuracy and time. Then it checks the other bundled models' forward
# passes against PyTorch. (MAT and the bert-mini/fortunes default come
# with the MAT and trainer issues.)
set -e
cd "$(dirname "$0")/.."
sh tools/setup.sh > /dev/null
echo "== training models/mlp on Fashion-MNIST (1,500 steps of batch 64, SGD momentum 0.9, cosine decay)"
build/matc train models/mlp/model.onnx --data idx:/usr/share/datasets/fashion-mnist \
  --steps 1500 --batch 64 --optimizer sgd --momentum 0.9 --lr 0.05 --schedule cosine \
  --eval-every 500 --log /tmp/matc-quickstart.jsonl
echo "(per-step log: /tmp/matc-quickstart.jsonl)"
for m in vgg-small bert-mini switch-mini; do
  echo "== forward pass of models/$m against PyTorch"
  build/matc run "models/$m/model.onnx" --data "models/$m/test_data_set_0" \
    --rtol 1e-4 --atol 1e-5 --repeat 20
done
