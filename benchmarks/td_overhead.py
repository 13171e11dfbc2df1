"""Target 1: training overhead of targeted dropout on a CIFAR-shaped ResNet.

Step time (`train_on_batch`, SGD with momentum, random CIFAR-shaped data)
of `keras_tdrop.experiments.models.resnet` with TargetedDropout on every
eligible conv (the stem and the logits left alone, as in the references),
divided by the
same model without it; weight and unit targeting, and a naive wrapper that
fully sorts every kernel each step (`NaiveSortDropout` below) as the point of
comparison. `--xla` adds the same pair compiled with `jit_compile=True`.

    python benchmarks/td_overhead.py          # ResNet-20 width 0.5, batch 32
    python benchmarks/td_overhead.py --full   # ResNet-20 width 0.5, batch 128
"""

import math

import _bench
import keras
import numpy as np
from keras import ops

from keras_tdrop import apply_targeted_dropout
from keras_tdrop import targeting as targeting_lib
from keras_tdrop.experiments import models
from keras_tdrop.kernels import kernel_variables


class NaiveSortDropout(keras.layers.Wrapper):
    """Weight-targeted dropout the direct way: a full sort of every column.

    Each step sorts |w| of every output column, reads the k-th smallest and
    drops the entries below it with probability `rate` (for-ai/TD's rule).
    """

    def __init__(self, layer, rate=0.5, target_rate=0.5, **kwargs):
        super().__init__(layer, **kwargs)
        self.rate = rate
        self.target_rate = target_rate
        self.seed_generator = keras.random.SeedGenerator(0)

    def build(self, input_shape=None):
        if not self.layer.built:
            self.layer.build(input_shape)
        self._gamma = self.add_weight(
            shape=(),
            initializer=keras.initializers.Constant(self.target_rate),
            trainable=False,
            name="gamma",
        )
        self.built = True

    def call(self, inputs, training=None):
        if not training:
            return self.layer(inputs)
        mapping = []
        for kernel in kernel_variables(self.layer):
            rows, cols = targeting_lib.matrix_shape(kernel.shape)
            scores = ops.abs(ops.reshape(kernel.value, (rows, cols)))
            k = ops.cast(ops.floor(self._gamma * rows), "int32")
            kth = ops.take(
                ops.sort(scores, axis=0), ops.minimum(k, rows - 1), axis=0
            )
            noise = keras.random.uniform((rows, cols), seed=self.seed_generator)
            drop = ops.logical_and(
                ops.less(scores, kth), ops.less(noise, self.rate)
            )
            value = ops.where(
                ops.reshape(drop, kernel.shape),
                ops.zeros_like(kernel.value),
                kernel.value,
            )
            mapping.append((kernel, value))
        with keras.StatelessScope(state_mapping=mapping):
            return self.layer(inputs)


def naive_model(model, rate, target_rate):
    def wrap(layer):
        if (
            isinstance(layer, keras.layers.Conv2D)
            and layer.name != "stem"
            and layer.name != "logits"
        ):
            fresh = layer.__class__.from_config(layer.get_config())
            fresh.build(layer.input.shape)
            fresh.set_weights(layer.get_weights())
            return NaiveSortDropout(fresh, rate, target_rate)
        return layer.__class__.from_config(layer.get_config())

    copy = keras.models.clone_model(model, clone_function=wrap)
    return copy


def mask_costs(base, rate, target_rate, reps, warmup):
    """Times the kernel transform alone: every eligible kernel, one step.

    `targeted_dropout` (weight and unit) against the naive full sort, each
    compiled as one `tf.function` over all the kernels, plain and with
    `jit_compile=True`.
    """
    import tensorflow as tf

    kernels = [
        v
        for layer in base.layers
        if layer.name not in ("stem", "logits")
        for v in kernel_variables(layer)
    ]
    gamma = keras.Variable(target_rate, trainable=False)
    seed = keras.random.SeedGenerator(0)

    def naive(kernel):
        rows, cols = targeting_lib.matrix_shape(kernel.shape)
        scores = ops.abs(ops.reshape(kernel, (rows, cols)))
        k = ops.cast(ops.floor(gamma * rows), "int32")
        kth = ops.take(
            ops.sort(scores, axis=0), ops.minimum(k, rows - 1), axis=0
        )
        noise = keras.random.uniform((rows, cols), seed=seed)
        drop = ops.logical_and(ops.less(scores, kth), ops.less(noise, rate))
        return ops.where(
            ops.reshape(drop, kernel.shape), ops.zeros_like(kernel), kernel
        )

    def ours(targeting):
        def fn(kernel):
            return targeting_lib.targeted_dropout(
                kernel, rate, gamma, targeting, training=True, seed=seed
            )

        return fn

    fns = {}
    for jit in (False, True):
        for name, fn in (
            ("naive_sort", naive),
            ("weight", ours("weight")),
            ("unit", ours("unit")),
        ):
            graph = tf.function(
                lambda fn=fn: [fn(k.value) for k in kernels], jit_compile=jit
            )
            label = name + ("_xla" if jit else "")
            fns[label] = lambda g=graph: [t.numpy() for t in g()]
    n = sum(math.prod(k.shape) for k in kernels)
    print(f"kernel transform alone: {len(kernels)} kernels, {n:,} weights")
    times = _bench.interleave(fns, reps, warmup, inner=5, progress=False)
    _bench.timing_table(times, "naive_sort")


def compiled(model, jit_compile=False):
    model.compile(
        optimizer=keras.optimizers.SGD(0.01, momentum=0.9),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        jit_compile=jit_compile,
    )
    return model


def main():
    p = _bench.parser(__doc__.splitlines()[0])
    p.add_argument("--depth", type=int, default=20)
    p.add_argument("--width", type=float, default=0.5)
    p.add_argument("--batch", type=int, default=None)
    p.add_argument("--rate", type=float, default=0.5)
    p.add_argument("--target-rate", type=float, default=0.5)
    p.add_argument("--xla", action="store_true", help="add jit_compile=True")
    p.add_argument("--no-naive", action="store_true")
    p.add_argument(
        "--masks", action="store_true", help="also time the transform alone"
    )
    p.add_argument("--masks-only", action="store_true")
    args = p.parse_args()
    batch = args.batch or (128 if args.full else 32)
    reps = args.reps or (15 if args.full else 10)
    keras.utils.set_random_seed(0)
    base = models.resnet(args.depth, args.width)
    rng = np.random.default_rng(0)
    x = rng.random((batch, 32, 32, 3), dtype=np.float32)
    y = rng.integers(0, 10, batch)

    def td(targeting, jit=False):
        return compiled(
            apply_targeted_dropout(
                base,
                args.rate,
                args.target_rate,
                targeting,
                exclude=["stem"],
            ),
            jit,
        )

    if args.masks or args.masks_only:
        mask_costs(base, args.rate, args.target_rate, reps, args.warmup)
        if args.masks_only:
            return
    variants = {"plain": compiled(keras.models.clone_model(base))}
    variants["td_weight"] = td("weight")
    variants["td_unit"] = td("unit")
    if not args.no_naive:
        variants["naive_sort"] = compiled(
            naive_model(base, args.rate, args.target_rate)
        )
    if args.xla:
        variants["plain_xla"] = compiled(keras.models.clone_model(base), True)
        variants["td_weight_xla"] = td("weight", True)
        variants["td_unit_xla"] = td("unit", True)
    print(
        f"ResNet-{args.depth} width {args.width} "
        f"({base.count_params():,} parameters), batch {batch}, "
        f"alpha {args.rate}, gamma {args.target_rate}; {reps} rounds; "
        f"{_bench.load()}",
        flush=True,
    )
    fns = {
        name: (lambda m=m: m.train_on_batch(x, y))
        for name, m in variants.items()
    }
    times = _bench.interleave(fns, reps, warmup=args.warmup)
    _bench.timing_table(times, "plain")
    if args.xla:
        print("XLA rows against plain_xla:")
        xla = [k for k in times if k.endswith("_xla")]
        _bench.timing_table(_bench.sub(times, xla), "plain_xla")
    size = f"ResNet-{args.depth} w{args.width} b{batch}"
    pairs = [("td_weight", "plain"), ("td_unit", "plain")]
    if args.xla:
        pairs += [("td_weight_xla", "plain_xla"), ("td_unit_xla", "plain_xla")]
    for name, baseline in pairs:
        cpu, wall = _bench.both(times, name, baseline)
        _bench.result(
            f"target 1 {name} CPU-time step ratio (wall {wall:.3f}), {size}",
            cpu,
            1.03,
        )


if __name__ == "__main__":
    main()
