#!/usr/bin/env bash
# Issue 15 part 4, the converged scale: ResNet-8 at half width (16/32/64
# filters, 78k parameters) on CIFAR-10's full training set (50,000 images,
# the reference augmentation), 20 epochs, cosine learning rate from 0.4
# after a 2% warm-up, evaluated on the full test set; every sweep with and
# without BatchNorm recalibration (2,000 training images). Plain training
# reaches 80.3% (seed 0) in about 27 minutes on one quiet core.
# Run folders go to runs/cifar10_resnet8_cos20/; their small files are
# copied here (make results rebuilds the tables from them). Runs already
# copied are skipped, so the script resumes across sessions.
# Usage: bash docs/results/cifar10_resnet8_cos20/run.sh CORE EXPERIMENT...
#   e.g. run.sh 1 none targeted_weight_0.66_0.75 ramping_weight
set -euo pipefail
cd "$(dirname "$0")/../../.."
core=$1
shift
export TF_NUM_INTRAOP_THREADS=1 TF_NUM_INTEROP_THREADS=1
here=docs/results/cifar10_resnet8_cos20
for seed in ${SEEDS:-0 1 2}; do
  for exp in "$@"; do
    run=runs/cifar10_resnet8_cos20/$exp-s$seed
    if [ -f "$here/$exp-s$seed/results.json" ]; then continue; fi
    taskset -c "$core" .venv/bin/keras-tdrop train "$exp" --model resnet8 \
      --width 0.5 --epochs 20 --lr-schedule cosine --lr-warmup 0.02 \
      --seed "$seed" --epoch-lines --out "$run"
    mkdir -p "$here/$exp-s$seed"
    cp "$run"/config.json "$run"/results.json "$run"/history.csv \
      "$run"/sweep_*.csv "$here/$exp-s$seed/"
  done
done
