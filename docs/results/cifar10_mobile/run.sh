#!/usr/bin/env bash
# The mobile payoff issue's converged scale: models.mobile_cnn (133,898
# parameters) on CIFAR-10, trained on 45,000 training images (the
# reference augmentation: pad 4, random crop, flip), 5,000 held out as the
# validation split every setting is chosen on, 12 epochs of SGD (Nesterov
# momentum 0.9, batch 128, cosine from 0.1 after a 5% warm-up, L2 4e-5),
# evaluated on the full test set. A plain run takes about an hour on one
# core. Run folders live here and resume (an interrupted run restarts from
# its last epoch; a finished one is evaluated or skipped), so the script
# spans sessions: commit the folders as they fill.
# Usage: bash docs/results/cifar10_mobile/run.sh CORE METHOD...
#   e.g. SEEDS="0 1 2" run.sh 1 none targeted narrow
#   narrow trains the width of every prune fraction in WIDTHS (default 0.5).
set -euo pipefail
cd "$(dirname "$0")/../../.."
core=$1
shift
export TF_NUM_INTRAOP_THREADS=1 TF_NUM_INTEROP_THREADS=1
for seed in ${SEEDS:-0 1 2}; do
  for method in "$@"; do
    taskset -c "$core" .venv/bin/keras-tdrop mobile --scale converged \
      --method "$method" --seeds "$seed" --widths "${WIDTHS:-0.5}" \
      --out docs/results/cifar10_mobile
  done
done
