#!/usr/bin/env bash
# Issue 15 part 2 on the MNIST CNN (no BatchNorm): the unit semantics of
# targeted unit dropout (alpha 0.9, gamma 0.75) against no regularisation,
# 3 seeds each, 3 epochs of 12,800 training images, full test set, cosine
# learning rate. Run folders go to runs/mnist_cnn_units/; their small files
# are copied here (make results rebuilds the tables from them).
# Usage: bash docs/results/mnist_cnn_units/run.sh [CORE]   (pins to CORE)
set -euo pipefail
cd "$(dirname "$0")/../../.."
core=${1:-0}
export TF_NUM_INTRAOP_THREADS=1 TF_NUM_INTEROP_THREADS=1
here=docs/results/mnist_cnn_units
for seed in 0 1 2; do
  for exp in none targeted_unit_0.9_0.75 targeted_unit_0.9_0.75_rescale \
      targeted_unit_0.9_0.75_column targeted_unit_0.9_0.75_column_rescale; do
    run=runs/mnist_cnn_units/$exp-s$seed
    if [ -f "$here/$exp-s$seed/results.json" ]; then continue; fi
    taskset -c "$core" .venv/bin/keras-tdrop train "$exp" --model mnist_cnn \
      --data mnist --epochs 3 --train-limit 12800 --lr-schedule cosine \
      --lr-warmup 0.02 --learning-rate 0.1 --seed "$seed" \
      --fractions 0,0.25,0.5,0.6,0.75,0.9 --epoch-lines --out "$run"
    mkdir -p "$here/$exp-s$seed"
    cp "$run"/config.json "$run"/results.json "$run"/history.csv \
      "$run"/sweep_*.csv "$here/$exp-s$seed/"
  done
done
