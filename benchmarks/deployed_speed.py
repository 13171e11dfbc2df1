"""Target 5: LiteRT latency of truncated and shrunk models follows their size.

1. A 784-4096-4096-10 MLP head with `TriangularDropout` after each hidden
   layer, truncated (`keras_tdrop.truncate`) to 1/2, 1/4 and 1/8 of its
   width, against the full model; beside it the same architecture built
   directly at that width, which a truncated model must match (that pair
   is also timed on its own, in turns).
2. `mnist_cnn` with whole units and filters removed (`compute_masks(...,
   targeting="unit")` then `keras_tdrop.pruning.shrink`), against the
   full CNN; every conv and dense layer but the logits is pruned, the stem
   included (`--cnn-keep-stem`: the stem kept whole, as the references
   prune). `--layers` adds the time after each layer (sub-models ending
   there), to show where the pruned CNN's time goes.

Every model is converted with `keras_tdrop.export.to_tflite` (checked
against Keras there), then all interpreters are timed in turns (one
invocation each, order rotated, `--inner` invocations per round), medians
of process CPU time per invocation (single-threaded interpreter).
The FLOP ratio counts the multiply-adds of the Dense and Conv layers.

    python benchmarks/deployed_speed.py          # MLP batch 1, CNN batch 8
    python benchmarks/deployed_speed.py --full   # more rounds
    python benchmarks/deployed_speed.py --cnn-batch 64 --layers
"""

import atexit
import math
import os
import shutil
import tempfile

import _bench
import keras
import numpy as np

from keras_tdrop import TriangularDropout
from keras_tdrop import truncate
from keras_tdrop.experiments import models
from keras_tdrop.export import to_tflite
from keras_tdrop.pruning import compute_masks
from keras_tdrop.pruning import shrink


def macs(model):
    """Multiply-adds of the Dense and Conv2D layers for one example."""
    total = 0
    for layer in model.layers:
        if isinstance(layer, (keras.layers.Dense, keras.layers.Conv2D)):
            spatial = math.prod(layer.output.shape[1:-1])
            total += spatial * math.prod(layer.kernel.shape)
    return total


def mlp(units, triangular):
    inputs = keras.Input((784,), name="image")
    x = inputs
    for i in (1, 2):
        x = keras.layers.Dense(units, activation="relu", name=f"fc{i}")(x)
        if triangular:
            x = TriangularDropout(name=f"tri{i}")(x)
    outputs = keras.layers.Dense(10, name="logits")(x)
    return keras.Model(inputs, outputs)


def interpreter(model, x, folder, name, threads):
    from ai_edge_litert import interpreter as litert

    path = os.path.join(folder, f"{name}.tflite")
    export = to_tflite(model, path, sample=x, repeats=1, num_threads=threads)
    runner = litert.Interpreter(model_path=path, num_threads=threads)
    index = runner.get_input_details()[0]["index"]
    runner.resize_tensor_input(index, x.shape)
    runner.allocate_tensors()
    runner.set_tensor(index, x)
    runner.invoke()
    return runner, export


def shapes(model):
    """The filters/units of the conv and dense layers, as text."""
    return "/".join(
        str(layer.output.shape[-1])
        for layer in model.layers
        if isinstance(layer, (keras.layers.Dense, keras.layers.Conv2D))
    )


def layer_times(models, x, folder, reps, inner, threads):
    """Prints, per model, the CPU time per invocation of the sub-models that
    end after each layer, and each layer's increment (its own cost, within
    the noise), beside its share of the multiply-adds."""
    runners = {}
    for name, model in models.items():
        for layer in model.layers[1:]:
            sub = keras.Model(model.input, layer.output)
            key = f"{name}:{layer.name}"
            runners[key], _ = interpreter(
                sub, x, folder, key.replace(":", "_").replace("%", ""), threads
            )
    times = timed(runners, reps, inner)
    print(f"time (us, CPU) after each layer, batch {x.shape[0]}:")
    rows = []
    for name, model in models.items():
        previous = 0.0
        for layer in model.layers[1:]:
            t = _bench.quartiles(times.cpu[f"{name}:{layer.name}"])[1] * 1e6
            share = ""
            if isinstance(layer, (keras.layers.Dense, keras.layers.Conv2D)):
                spatial = math.prod(layer.output.shape[1:-1])
                layer_macs = spatial * math.prod(layer.kernel.shape)
                share = f"{layer_macs / macs(model):.0%}"
            rows.append(
                [name, layer.name, f"{t:.1f}", f"{t - previous:+.1f}", share]
            )
            previous = t
    _bench.table(
        ["model", "after layer", "us", "layer's own", "MAC share"], rows
    )


def timed(runners, reps, inner):
    fns = {name: r.invoke for name, r in runners.items()}
    return _bench.interleave(fns, reps, warmup=3, inner=inner, progress=False)


def main():
    p = _bench.parser(__doc__.splitlines()[0])
    p.add_argument("--mlp-batch", type=int, default=1)
    p.add_argument("--cnn-batch", type=int, default=8)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--inner", type=int, default=None)
    p.add_argument("--cnn-keep-stem", action="store_true")
    p.add_argument(
        "--layers", action="store_true", help="CNN time after each layer"
    )
    args = p.parse_args()
    reps = args.reps or (30 if args.full else 15)
    inner = args.inner or (20 if args.full else 10)
    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    folder = tempfile.mkdtemp(prefix="tdrop_bench_")
    atexit.register(shutil.rmtree, folder, True)
    print(
        f"LiteRT, {args.threads} thread(s); MLP batch {args.mlp_batch}, CNN "
        f"batch {args.cnn_batch}; {reps} rounds x {inner}; {_bench.load()}",
        flush=True,
    )

    # 1. Width-truncated MLP against the same architecture built directly.
    full = mlp(4096, triangular=True)
    x = rng.standard_normal((args.mlp_batch, 784)).astype(np.float32)
    plain_full = truncate(full, 4096)
    runners, sizes = {}, {}
    runners["full"], export = interpreter(
        plain_full, x, folder, "full", args.threads
    )
    sizes["full"] = (macs(plain_full), export.bytes)
    for div in (2, 4, 8):
        width = 4096 // div
        small = truncate(full, width)
        direct = mlp(width, triangular=False)
        for name, model in (
            (f"trunc_1/{div}", small),
            (f"direct_1/{div}", direct),
        ):
            runners[name], export = interpreter(
                model, x, folder, name.replace("/", "_"), args.threads
            )
            sizes[name] = (macs(model), export.bytes)
    times = timed(runners, reps, inner)
    rows, results = [], []
    for div in (2, 4, 8):
        trunc, direct = f"trunc_1/{div}", f"direct_1/{div}"
        flop_ratio = sizes["full"][0] / sizes[trunc][0]
        speed_t = 1 / _bench.ratio(times.cpu, trunc, "full")[1]
        speed_d = 1 / _bench.ratio(times.cpu, direct, "full")[1]
        # Timed again as a pair alone: in the rotation above, each model
        # runs after a different one (the full model evicts the caches),
        # which biases the ratio of two equal models by up to ~10%.
        pair = timed({m: runners[m] for m in (trunc, direct)}, reps, inner)
        same = _bench.ratio(pair.cpu, trunc, direct)
        # Fastest round against fastest round: robust to rounds slowed by
        # another process evicting the caches (the medians are not).
        best = min(pair.cpu[trunc]) / min(pair.cpu[direct])
        rows.append(
            [
                f"1/{div} ({4096 // div})",
                f"{_bench.quartiles(times.cpu[trunc])[1] * 1e3:.3f}",
                f"{flop_ratio:.1f}",
                f"{speed_t:.1f}",
                f"{speed_d:.1f}",
                f"{same[1]:.3f} ({same[0]:.3f}-{same[2]:.3f})",
                f"{best:.3f}",
            ]
        )
        results.append((div, speed_t, flop_ratio, same[1]))
    print(
        f"MLP 784-4096-4096-10 full: "
        f"{_bench.quartiles(times.cpu['full'])[1] * 1e3:.3f} ms, "
        f"{sizes['full'][1]:,} bytes"
    )
    _bench.table(
        [
            "width",
            "trunc ms",
            "FLOP ratio",
            "speed-up trunc",
            "speed-up direct",
            "trunc/direct time (IQR)",
            "trunc/direct best",
        ],
        rows,
    )

    # 2. Channel-pruned CNN (whole filters and units removed).
    cnn = models.mnist_cnn()
    xc = rng.random((args.cnn_batch, 28, 28, 1), dtype=np.float32)
    cnn_runners, cnn_sizes = {}, {}
    cnn_runners["full"], export = interpreter(
        cnn, xc, folder, "cnn_full", args.threads
    )
    cnn_sizes["full"] = (macs(cnn), export.bytes)
    exclude = ["stem"] if args.cnn_keep_stem else None
    cnn_models = {"full": cnn}
    for fraction in (0.5, 0.75):
        masks = compute_masks(cnn, fraction, targeting="unit", exclude=exclude)
        small, _ = shrink(cnn, masks)
        name = f"pruned_{fraction:.0%}"
        cnn_models[name] = small
        cnn_runners[name], export = interpreter(
            small, xc, folder, f"cnn_{int(fraction * 100)}", args.threads
        )
        cnn_sizes[name] = (macs(small), export.bytes)
    cnn_times = timed(cnn_runners, reps, inner)
    print(
        f"mnist_cnn, batch {args.cnn_batch}, "
        f"{'stem kept whole' if exclude else 'stem pruned too'}: "
        + "; ".join(f"{n} {shapes(m)}" for n, m in cnn_models.items())
    )
    rows = []
    for name in cnn_runners:
        flop_ratio = cnn_sizes["full"][0] / cnn_sizes[name][0]
        speed = 1 / _bench.ratio(cnn_times.cpu, name, "full")[1]
        rows.append(
            [
                name,
                f"{cnn_sizes[name][0]:,}",
                f"{cnn_sizes[name][1]:,}",
                f"{_bench.quartiles(cnn_times.cpu[name])[1] * 1e3:.3f}",
                f"{flop_ratio:.2f}",
                f"{speed:.2f}",
                f"{speed / flop_ratio:.2f}",
            ]
        )
        if name != "full":
            results.append((name, speed, flop_ratio, None))
    _bench.table(
        [
            "mnist_cnn",
            "MACs/example",
            "bytes",
            "ms",
            "FLOP ratio",
            "speed-up",
            "speed-up/FLOP",
        ],
        rows,
    )
    if args.layers:
        layer_times(cnn_models, xc, folder, reps, inner, args.threads)
    for key, speed, flop_ratio, same in results:
        if same is not None:
            _bench.result(
                f"target 5 MLP 1/{key} speed-up / FLOP ratio "
                f"({speed:.1f}x vs {flop_ratio:.1f}x)",
                speed / flop_ratio,
                1.0,
                higher_is_better=True,
                fmt="{:.2f}",
            )
            _bench.result(
                f"target 5 MLP 1/{key} truncated / direct time",
                same,
                1.05,
                fmt="{:.3f}",
            )
        else:
            _bench.result(
                f"target 5 CNN {key} speed-up / FLOP ratio "
                f"({speed:.2f}x vs {flop_ratio:.2f}x)",
                speed / flop_ratio,
                0.8,
                higher_is_better=True,
                fmt="{:.2f}",
            )


if __name__ == "__main__":
    main()
