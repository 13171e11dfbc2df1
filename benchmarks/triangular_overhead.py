"""Target 2: training overhead of Triangular Dropout on an MLP.

Step time (`train_on_batch`, Adam, random MNIST-shaped data) of a
784-1024-1024-10 MLP with `TriangularDropout` after each hidden layer,
divided by the same MLP without it; the exact triangular masks and the
random-width variant.

    python benchmarks/triangular_overhead.py          # batch 256
    python benchmarks/triangular_overhead.py --full   # batch 1024
    python benchmarks/triangular_overhead.py --xla    # + jit_compile=True
"""

import _bench
import keras
import numpy as np

from keras_tdrop import TriangularDropout


def mlp(mode=None, units=(1024, 1024), jit_compile=False):
    inputs = keras.Input((784,), name="image")
    x = inputs
    for i, width in enumerate(units, start=1):
        x = keras.layers.Dense(width, activation="relu", name=f"fc{i}")(x)
        if mode:
            x = TriangularDropout(mode=mode, seed=i, name=f"tri{i}")(x)
    outputs = keras.layers.Dense(10, name="logits")(x)
    model = keras.Model(inputs, outputs)
    model.compile(
        optimizer="adam",
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        jit_compile=jit_compile,
    )
    return model


def main():
    p = _bench.parser(__doc__.splitlines()[0])
    p.add_argument("--batch", type=int, default=None)
    p.add_argument("--xla", action="store_true", help="add jit_compile=True")
    args = p.parse_args()
    batch = args.batch or (1024 if args.full else 256)
    reps = args.reps or (20 if args.full else 15)
    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    x = rng.random((batch, 784), dtype=np.float32)
    y = rng.integers(0, 10, batch)
    variants = {
        "plain": mlp(),
        "triangular": mlp("triangular"),
        "random_width": mlp("random"),
    }
    if args.xla:
        variants["plain_xla"] = mlp(jit_compile=True)
        variants["triangular_xla"] = mlp("triangular", jit_compile=True)
        variants["random_width_xla"] = mlp("random", jit_compile=True)
    print(
        f"MLP 784-1024-1024-10, batch {batch}; {reps} rounds; {_bench.load()}",
        flush=True,
    )
    fns = {
        name: (lambda m=m: m.train_on_batch(x, y))
        for name, m in variants.items()
    }
    times = _bench.interleave(fns, reps, warmup=args.warmup, inner=3)
    _bench.timing_table(times, "plain")
    pairs = [("triangular", "plain"), ("random_width", "plain")]
    if args.xla:
        print("XLA rows against plain_xla:")
        xla = [k for k in times if k.endswith("_xla")]
        _bench.timing_table(_bench.sub(times, xla), "plain_xla")
        pairs += [
            ("triangular_xla", "plain_xla"),
            ("random_width_xla", "plain_xla"),
        ]
    for name, baseline in pairs:
        cpu, wall = _bench.both(times, name, baseline)
        _bench.result(
            f"target 2 {name} CPU-time step ratio (wall {wall:.3f}), "
            f"MLP b{batch}",
            cpu,
            1.02,
        )


if __name__ == "__main__":
    main()
