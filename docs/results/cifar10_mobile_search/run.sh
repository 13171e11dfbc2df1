#!/usr/bin/env bash
# The validation search of targeted dropout's settings for the mobile
# payoff issue: the converged mobile scale cut to 3 epochs (`--scale
# search`), seed 0, plain training and targeted dropout at each setting
# below. Every choice reads the validation split (5,000 held-out training
# images), never the test set:
#   `python -m keras_tdrop.experiments.mobile_compare --metric val_accuracy
#    docs/results/cifar10_mobile_search` (make results writes compare/).
# Rule, fixed before the runs: the setting with the highest validation
# accuracy at 50% of the channel groups removed, among those whose dense
# validation accuracy is within 2 points of plain training's; the chosen
# one is then confirmed at the converged scale (run.sh beside
# cifar10_mobile).
# Usage: bash docs/results/cifar10_mobile_search/run.sh CORE
set -euo pipefail
cd "$(dirname "$0")/../../.."
core=$1
export TF_NUM_INTRAOP_THREADS=1 TF_NUM_INTEROP_THREADS=1
run() {
  taskset -c "$core" .venv/bin/keras-tdrop mobile --scale search \
    --seeds 0 --out docs/results/cifar10_mobile_search "$@"
}
run --method none
run --method targeted
run --method targeted --rate 0.75 --target-rate 0.5
run --method targeted --rate 0.5 --target-rate 0.7
run --method targeted --rate 0.75 --target-rate 0.7
