#!/usr/bin/env bash
# The strategy comparisons recorded in the README, on Fashion-MNIST from the embedded
# EfficientNet-Lite0 at 112 px (full 10,000-image test set). Prints one line per run.
# Usage: bash benchmarks/strategies.sh [OUT_DIR]   (about 20 minutes on 2 cores)
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-runs/strategies}
TL=.venv/bin/transferlab
export TQDM_DISABLE=1
run() {  # name, then train arguments
  local name=$1; shift
  /usr/bin/time -f "%e" -o "$OUT/$name.time" $TL train fashion-mnist --resolution 112 --out "$OUT/$name" "$@" \
    > "$OUT/$name.log" 2>&1
  python3 -c "import json,sys; m=json.load(open('$OUT/$name/metrics.json')); \
print(f\"$name: test accuracy {m['test_accuracy']:.4f}, {m['num_train']} training images, \
wall {open('$OUT/$name.time').read().strip()} s\")"
}
mkdir -p "$OUT"
run head-100 --strategy head --samples-per-class 100
run finetune-100-no-freeze-bn --strategy finetune --samples-per-class 100 --no-freeze-bn
run finetune-100 --strategy finetune --samples-per-class 100
run head-10 --strategy head --samples-per-class 10
run scratch-10 --strategy scratch --samples-per-class 10
run finetune-100-freeze-bn --strategy finetune --samples-per-class 100 --freeze-bn
run finetune-100-freeze-bn-augment --strategy finetune --samples-per-class 100 --freeze-bn --augment
