"""Issue 15: `prune_sweep` with BatchNorm recalibration against without.

`models.mobile_cnn` (a MobileNetV2-style CIFAR-10 network, 22
BatchNormalization layers), unit pruning at 3 fractions, evaluated on
CIFAR-10 test images (tfds, offline) or random images of the same shape.
With `recalibrate=`, every fraction re-estimates all BatchNorm statistics
on a few batches of 32 (one forward pass per BatchNorm layer, stopped at
that layer) before evaluating. Both variants run in turns.

    python benchmarks/recalibration_cost.py          # 1,000 images, 4 batches
    python benchmarks/recalibration_cost.py --full   # 10,000 images, 10
"""

import _bench
import keras
import numpy as np

from keras_tdrop.experiments import models
from keras_tdrop.pruning import prune_sweep
from keras_tdrop.pruning.recalibrate import batchnorm_layers

FRACTIONS = (0.0, 0.25, 0.5)


def data(limit):
    try:
        from keras_tdrop.experiments.datasets import load_numpy

        x, y = load_numpy("cifar10", "test", limit=limit)
        return x, y, "CIFAR-10 test"
    except Exception as error:  # no prepared data here: same shapes
        print(f"(CIFAR-10 unavailable: {type(error).__name__}; random)")
        rng = np.random.default_rng(0)
        x = rng.random((limit, 32, 32, 3), dtype=np.float32)
        return x, rng.integers(0, 10, limit), "random"


def main():
    p = _bench.parser(__doc__.splitlines()[0])
    p.add_argument("--limit", type=int, default=None, help="test images")
    p.add_argument("--batches", type=int, default=None, help="of 32")
    args = p.parse_args()
    limit = args.limit or (10000 if args.full else 1000)
    batches = args.batches or (10 if args.full else 4)
    reps = args.reps or 5
    keras.utils.set_random_seed(0)
    model = models.mobile_cnn()
    model.compile(
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    x, y, source = data(limit)
    calibration = x[: 32 * batches]
    options = dict(targeting="unit")

    def plain():
        prune_sweep(model, (x, y), FRACTIONS, **options)

    def recalibrated():
        prune_sweep(
            model, (x, y), FRACTIONS, recalibrate=calibration, **options
        )

    print(
        f"mobile_cnn ({len(batchnorm_layers(model))} BatchNorm layers), "
        f"{len(x):,} {source} images, {len(FRACTIONS)} fractions, "
        f"recalibration on {batches} batches of 32; {reps} rounds; "
        f"{_bench.load()}",
        flush=True,
    )
    times = _bench.interleave(
        {"sweep": plain, "sweep + recalibrate": recalibrated},
        reps,
        args.warmup,
    )
    _bench.timing_table(times, "sweep", unit="s")
    cpu, wall = _bench.both(times, "sweep + recalibrate", "sweep")
    extra = np.median(
        [
            (a - b) / len(FRACTIONS)
            for a, b in zip(times["sweep + recalibrate"], times["sweep"])
        ]
    )
    print(f"recalibration per fraction (wall, median): {extra:.2f} s")
    _bench.result(
        f"issue 15 sweep with / without recalibration, CPU time (wall "
        f"{wall:.3f}), mobile_cnn {len(x)} images, {batches} batches",
        cpu,
        2.0,
    )


if __name__ == "__main__":
    main()
