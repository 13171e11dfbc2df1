#!/usr/bin/env bash
# Issue 15 part 2 on a BatchNorm network: the unit semantics of targeted unit
# dropout (alpha 0.9, gamma 0.75) against no regularisation on ResNet-8 at
# half width (16/32/64 filters), CIFAR-10's full training and test sets, a
# short cosine schedule (4 epochs: a screening scale, not a converged one),
# every sweep with and without BatchNorm recalibration (2,000 training
# images). Run folders go to runs/cifar10_resnet8_units/; their small files
# are copied here (make results rebuilds the tables from them).
# Usage: [EXPERIMENTS="..."] bash docs/results/cifar10_resnet8_units/run.sh [CORE] [SEEDS...]
set -euo pipefail
cd "$(dirname "$0")/../../.."
core=${1:-1}
shift || true
seeds=${*:-0 1}
export TF_NUM_INTRAOP_THREADS=1 TF_NUM_INTEROP_THREADS=1
here=docs/results/cifar10_resnet8_units
for seed in $seeds; do
  for exp in ${EXPERIMENTS:-none targeted_unit_0.9_0.75 \
      targeted_unit_0.9_0.75_column targeted_unit_0.9_0.75_rescale \
      targeted_unit_0.9_0.75_column_rescale}; do
    run=runs/cifar10_resnet8_units/$exp-s$seed
    if [ -f "$here/$exp-s$seed/results.json" ]; then continue; fi
    taskset -c "$core" .venv/bin/keras-tdrop train "$exp" --model resnet8 \
      --width 0.5 --epochs 4 --lr-schedule cosine --lr-warmup 0.02 \
      --seed "$seed" --fractions 0,0.25,0.5,0.6,0.75,0.9 --epoch-lines \
      --out "$run"
    mkdir -p "$here/$exp-s$seed"
    cp "$run"/config.json "$run"/results.json "$run"/history.csv \
      "$run"/sweep_*.csv "$here/$exp-s$seed/"
  done
done
