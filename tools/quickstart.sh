#!/bin/sh
# The main job on the bundled default: sets up, builds, and (until the
# trainer lands) compiles and runs each bundled model against its PyTorch
# reference outputs, printing compile and run times.
set -e
cd "$(dirname "$0")/.."
sh tools/setup.sh > /dev/null
for m in mlp vgg-small bert-mini switch-mini; do
  [ -f "models/$m/model.onnx" ] || continue
  echo "== $m"
  build/matc inspect "models/$m/model.onnx" | sed -n '3,4p'
  build/matc run "models/$m/model.onnx" --data "models/$m/test_data_set_0" \
    --rtol 1e-4 --atol 1e-5 --repeat 20
done
