"""Target 4: `prune_sweep` over 10 fractions against 10 plain `evaluate`s.

Both sides start from a freshly compiled model, so each traces `evaluate`
once: the sweep on its own copy, the baseline on the model (recompiled
every round); both use `evaluate`'s default batch size. The sweep also
clones the model and computes and assigns the masks of each fraction.
MNIST test images (tfds, offline) or, without them, random
images of the same shape.

    python benchmarks/sweep_cost.py          # mnist_cnn, 2,000 test images
    python benchmarks/sweep_cost.py --full   # mnist_cnn, all 10,000
"""

import _bench
import keras
import numpy as np

from keras_tdrop.experiments import models
from keras_tdrop.pruning import prune_sweep

FRACTIONS = tuple(i / 10 for i in range(10))


def data(limit):
    try:
        from keras_tdrop.experiments.datasets import load_numpy

        x, y = load_numpy("mnist", "test", limit=limit)
        return x, y, "MNIST test"
    except Exception as error:  # no prepared data here: same shapes
        print(f"(MNIST unavailable: {type(error).__name__}; random images)")
        rng = np.random.default_rng(0)
        x = rng.random((limit, 28, 28, 1), dtype=np.float32)
        return x, rng.integers(0, 10, limit), "random"


def main():
    p = _bench.parser(__doc__.splitlines()[0])
    p.add_argument("--limit", type=int, default=None, help="test images")
    args = p.parse_args()
    limit = args.limit or (10000 if args.full else 2000)
    reps = args.reps or (7 if args.full else 7)
    keras.utils.set_random_seed(0)
    model = models.mnist_cnn()
    x, y, source = data(limit)

    def compile_model():
        model.compile(
            loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
            metrics=["accuracy"],
        )

    compile_model()

    def plain():
        compile_model()
        for _ in FRACTIONS:
            model.evaluate(x, y, verbose=0)

    def sweep():
        prune_sweep(model, (x, y), FRACTIONS)

    print(
        f"mnist_cnn, {len(x):,} {source} images, evaluate's default batch "
        "(32), "
        f"{len(FRACTIONS)} fractions; {reps} rounds; {_bench.load()}",
        flush=True,
    )
    times = _bench.interleave(
        {"10x evaluate": plain, "prune_sweep": sweep}, reps, args.warmup
    )
    _bench.timing_table(times, "10x evaluate", unit="s")
    cpu, wall = _bench.both(times, "prune_sweep", "10x evaluate")
    _bench.result(
        f"target 4 prune_sweep / 10 evaluates, CPU time (wall {wall:.3f}), "
        f"mnist_cnn {len(x)} images",
        cpu,
        1.3,
    )


if __name__ == "__main__":
    main()
