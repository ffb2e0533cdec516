#!/bin/sh
# The main job on the bundled default: sets up and builds (installing what
# is missing), then trains the bundled bert-mini (a 4-layer BERT encoder,
# 16 attention heads) as a masked language model on the fortunes corpus
# (Debian's fortunes package) with Modular Adaptive Training on, and
# prints the result: loss, masked-token accuracy, time, the FLOPs MAT saved
# and the modules it froze longest. A plot of the run (lambda_max per
# module over the steps, active modules, loss) is written next to the log.
set -e
cd "$(dirname "$0")/.."
sh tools/setup.sh > /dev/null
out=${TMPDIR:-/tmp}/matc-quickstart
mkdir -p "$out"
echo "== training models/bert-mini on /usr/share/games/fortunes (masked LM, byte tokens, 128-token windows)"
echo "   with MAT: 200 steps of batch 8, AdamW, warm-up then cosine decay; a probe every 25 steps"
build/matc train models/bert-mini/model.onnx --data text:/usr/share/games/fortunes:mlm:128 \
  --steps 200 --batch 8 --optimizer adamw --lr 1e-3 --weight-decay 0.01 --warmup 20 --schedule cosine \
  --eval-fraction 0.01 --eval-every 100 --mat on --mat-warmup 50 --mat-refresh 25 \
  --log "$out/bert-mini.jsonl" --out "$out/bert-mini-trained.onnx"
echo "(per-step log: $out/bert-mini.jsonl; trained model: $out/bert-mini-trained.onnx)"
if command -v python3 > /dev/null; then
  python3 tools/plot_mat.py "$out/bert-mini.jsonl" -o "$out/bert-mini.svg"
fi
