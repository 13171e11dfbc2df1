"""Issue 14: targeted dropout's cost on networks of many small layers.

Step time (`train_on_batch`, SGD with momentum, random data) of a model with
targeted dropout on every eligible kernel (all but the logits), divided by
the same model without it, weight and unit targeting, alpha 0.5, gamma 0.5,
in its two forms: `td_*`, a `TargetedDropout` wrapper per layer
(`apply_targeted_dropout`, one selection per kernel), and `model_*`, one
`ModelTargetedDropout` around the model (one selection per kernel size,
`keras_tdrop.batched_targeting`):

- `--model mobilenetv2` (default): MobileNetV2, alpha 0.35, 96x96 inputs,
  10 classes (52 wrapped layers), at each `--batches` (32 and 128);
- `--model resnet`: the reference ResNet of `td_overhead.py` (ResNet-20
  width 0.5, the stem left alone too), batch 128.

`--floor` adds `mask_only`: every one of those kernels multiplied by a
fixed all-ones mask (`FixedMask`, fraction 0) through the same kernel
substitution, no selection and no noise: what substituting the kernels
costs by itself, the floor under both forms.

`--parts` adds, in the same interleaved rounds, the pieces of weight
targeting's per-step work on the same kernels, each alone in a
`tf.function`: `part_transform` (the whole training transform,
`targeted_dropout` on every kernel), `part_mask` (the targeted sets
alone, `targeted_mask`), `part_select` (the selection op alone:
`NthElement` over each kernel's columns of |w|, no keys, no comparison)
and `part_noise` (the Bernoulli draw alone, `random.uniform` of every
kernel's shape), with their share of the plain step: what a step with
weight targeting cannot cost less than, however the rest is written.

`--nasnet` adds the first-`fit` time of NASNetMobile (64x64, 196 wrapped
layers): per round, a fresh plain and a fresh wrapped model are built and
compiled and their first `fit` (one epoch of `--nasnet-steps` batches of
32, mostly building the training graph) is timed, in rotated order, for
the plain model and both forms of weight targeting.

    python benchmarks/td_mobile_overhead.py --model mobilenetv2
    python benchmarks/td_mobile_overhead.py --model resnet
    python benchmarks/td_mobile_overhead.py --model none --nasnet
"""

import gc
import time

import _bench
import keras
import numpy as np
from keras import random

from keras_tdrop import ModelTargetedDropout
from keras_tdrop import apply_targeted_dropout
from keras_tdrop import targeted_dropout_layers
from keras_tdrop.experiments import models
from keras_tdrop.layers.kernel_mask import FixedMask
from keras_tdrop.targeting import targeted_dropout
from keras_tdrop.targeting import targeted_mask
from keras_tdrop.wrapping import apply_wrapper

STEP_TARGET = 1.05
RESNET_TARGET = 1.03
FIRST_FIT_TARGET = 1.25


def mobilenetv2():
    return keras.applications.MobileNetV2(
        input_shape=(96, 96, 3),
        alpha=0.35,
        weights=None,
        classes=10,
        classifier_activation=None,
    )


def compiled(model):
    model.compile(
        optimizer=keras.optimizers.SGD(0.01, momentum=0.9),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    return model


def wrapped(base, targeting, args, exclude=None):
    return apply_targeted_dropout(
        base, args.rate, args.target_rate, targeting, exclude=exclude
    )


def model_level(base, targeting, args, exclude=None):
    """`ModelTargetedDropout` around a copy of `base` (same weights)."""
    copy = keras.models.clone_model(base)
    copy.set_weights(base.get_weights())
    return ModelTargetedDropout(
        copy,
        args.rate,
        args.target_rate,
        targeting,
        exclude=[f"{name}/*" for name in exclude or []] or None,
    )


def parts(kernels, args):
    """The pieces of weight targeting's per-step work on `kernels`, each
    one `tf.function` over all of them (see the module docstring)."""
    import tensorflow as tf

    seed = random.SeedGenerator(0)

    def transform():
        return [
            targeted_dropout(
                k, args.rate, args.target_rate, training=True, seed=seed
            )
            for k in kernels
        ]

    def mask():
        return [targeted_mask(k, args.target_rate) for k in kernels]

    def select():
        out = []
        for k in kernels:
            columns = tf.transpose(tf.reshape(tf.abs(k), (-1, k.shape[-1])))
            n = int(args.target_rate * columns.shape[-1])
            out.append(tf.raw_ops.NthElement(input=columns, n=n))
        return out

    def noise():
        return [random.uniform(k.shape, seed=seed) for k in kernels]

    return {
        f"part_{name}": tf.function(fn)
        for name, fn in (
            ("transform", transform),
            ("mask", mask),
            ("select", select),
            ("noise", noise),
        )
    }


def parts_table(times, label, batch):
    """Each part's CPU time and its share of the plain step."""
    plain = _bench.quartiles(times.cpu["plain"])[1]
    rows = []
    for name in times.cpu:
        if name.startswith("part_"):
            ms = _bench.quartiles(times.cpu[name])[1]
            rows.append([name, f"{ms * 1e3:.2f}", f"{ms / plain:.1%}"])
    print(f"weight targeting's parts against the plain step, {label} b{batch}")
    _bench.table(["part", "CPU ms", "share of plain step"], rows)


def step_ratios(args):
    keras.utils.set_random_seed(0)
    if args.model == "resnet":
        base, batches, exclude = models.resnet(20, 0.5), [128], ["stem"]
        label, target = "ResNet-20 w0.5", RESNET_TARGET
        shape = (32, 32, 3)
    else:
        base, batches, exclude = mobilenetv2(), args.batches, None
        label, target = "MobileNetV2 a0.35 96x96", STEP_TARGET
        shape = (96, 96, 3)
    variants = {"plain": compiled(keras.models.clone_model(base))}
    for targeting in ("weight", "unit"):
        variants[f"td_{targeting}"] = compiled(
            wrapped(base, targeting, args, exclude)
        )
        variants[f"model_{targeting}"] = compiled(
            model_level(base, targeting, args, exclude)
        )
    if args.floor:
        variants["mask_only"] = compiled(
            apply_wrapper(
                base,
                FixedMask,
                {"fraction": 0.0},
                exclude=exclude,
                prefix="floor",
            )
        )
    n = len(targeted_dropout_layers(variants["td_weight"]))
    kernels = len(variants["model_weight"].targeted_kernels)
    assert kernels == n, (kernels, n)
    rng = np.random.default_rng(0)
    results = []
    for batch in batches:
        x = rng.random((batch, *shape), dtype=np.float32)
        y = rng.integers(0, 10, batch)
        print(
            f"{label} ({base.count_params():,} parameters, {n} wrapped "
            f"layers), batch {batch}, alpha {args.rate}, gamma "
            f"{args.target_rate}; {args.reps} rounds of {args.inner} "
            f"step(s); {_bench.load()}",
            flush=True,
        )
        fns = {
            name: (lambda m=m: m.train_on_batch(x, y))
            for name, m in variants.items()
        }
        if args.parts:
            fns.update(parts(variants["model_weight"].targeted_kernels, args))
        times = _bench.interleave(
            fns, args.reps, warmup=args.warmup, inner=args.inner
        )
        _bench.timing_table(times, "plain")
        if args.parts:
            parts_table(times, label, batch)
        if args.floor:
            cpu, wall = _bench.both(times, "mask_only", "plain")
            print(
                f"floor: kernel substitution alone (mask_only) / plain, CPU "
                f"time {cpu:.3f} (wall {wall:.3f}), {label} b{batch}",
                flush=True,
            )
        for name in ("td_weight", "td_unit", "model_weight", "model_unit"):
            cpu, wall = _bench.both(times, name, "plain")
            results.append(
                (
                    f"{name} CPU-time step ratio (wall {wall:.3f}), "
                    f"{label} b{batch}",
                    cpu,
                    target,
                )
            )
    return results


def nasnet_variant(name, base, args):
    if name == "td_weight":
        return wrapped(base, "weight", args)
    if name == "model_weight":
        return model_level(base, "weight", args)
    return base


def nasnet_first_fit(args):
    rng = np.random.default_rng(0)
    steps = args.nasnet_steps
    x = rng.random((32 * steps, 64, 64, 3), dtype=np.float32)
    y = rng.integers(0, 10, 32 * steps)
    names = ["plain", "td_weight", "model_weight"]
    wall = {name: [] for name in names}
    cpu = {name: [] for name in names}
    print(
        f"NASNetMobile 64x64, first fit of {steps} batches of 32, "
        f"{args.nasnet_rounds} rounds; {_bench.load()}",
        flush=True,
    )
    for r in range(args.nasnet_rounds):
        for name in names[r % 3 :] + names[: r % 3]:
            keras.backend.clear_session(free_memory=True)
            gc.collect()
            base = keras.applications.NASNetMobile(
                input_shape=(64, 64, 3), weights=None, classes=10
            )
            model = compiled(nasnet_variant(name, base, args))
            start, start_cpu = time.perf_counter(), time.process_time()
            model.fit(x, y, batch_size=32, epochs=1, verbose=0)
            wall[name].append(time.perf_counter() - start)
            cpu[name].append(time.process_time() - start_cpu)
            if name == "model_weight":
                size = f"{len(model.targeted_kernels)} targeted kernels"
            else:
                size = f"{len(targeted_dropout_layers(model))} wrapped layers"
            print(
                f"  round {r + 1}: {name} ({size}) first "
                f"fit {wall[name][-1]:.1f} s (cpu {cpu[name][-1]:.1f})",
                flush=True,
            )
            del model, base
    times = _bench.Times(wall)
    times.cpu = cpu
    _bench.timing_table(times, "plain", unit="s")
    results = []
    for name in names[1:]:
        c, w = _bench.both(times, name, "plain")
        results.append(
            (
                f"{name} CPU-time first-fit ratio (wall {w:.3f}), "
                "NASNetMobile 64x64",
                c,
                FIRST_FIT_TARGET,
            )
        )
    return results


def main():
    p = _bench.parser(__doc__.splitlines()[0])
    p.add_argument(
        "--model",
        choices=["mobilenetv2", "resnet", "none"],
        default="mobilenetv2",
    )
    p.add_argument("--batches", type=int, nargs="+", default=[32, 128])
    p.add_argument("--rate", type=float, default=0.5)
    p.add_argument("--target-rate", type=float, default=0.5)
    p.add_argument(
        "--inner",
        type=int,
        default=1,
        help="training steps per timed round and variant (their mean)",
    )
    p.add_argument("--floor", action="store_true")
    p.add_argument("--parts", action="store_true")
    p.add_argument("--nasnet", action="store_true")
    p.add_argument("--nasnet-rounds", type=int, default=3)
    p.add_argument("--nasnet-steps", type=int, default=2)
    args = p.parse_args()
    args.reps = args.reps or (15 if args.full else 8)
    results = []
    if args.model != "none":
        results += step_ratios(args)
    if args.nasnet:
        results += nasnet_first_fit(args)
    for label, value, target in results:
        _bench.result(f"issue 14 {label}", value, target)


if __name__ == "__main__":
    main()
