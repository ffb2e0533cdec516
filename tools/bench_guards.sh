#!/bin/sh
# bench_guards.sh BUILD_DIR [BATCH] [REPS]: executed FLOPs and measured step
# time of bert-mini's AdamW training step with 0/25/50/75% of its modules
# frozen by MAT guards, in weights and in stop mode: attention heads (4 per
# layer, 16 modules), then whole layers (one module per weight), and the
# step compiled without guards. Run on a quiet machine: times are medians
# of REPS steps.
set -e
build=${1:?usage: bench_guards.sh BUILD_DIR [BATCH] [REPS]}
batch=${2:-4}
reps=${3:-5}
src=$(cd "$(dirname "$0")/.." && pwd)
"$build/unit_guards" bench "$src/models/bert-mini/model.onnx" "$batch" 4 "$reps"
"$build/unit_guards" bench "$src/models/bert-mini/model.onnx" "$batch" 0 "$reps"
