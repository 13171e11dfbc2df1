"""Issue 13: LiteRT latency of group-pruned, shrunk mobile networks.

keras.applications MobileNetV2 (alpha 1.0) and EfficientNetB0, 224x224,
random weights, 1000 classes, logits out (`classifier_activation=None`:
a random EfficientNetB0's softmax outputs span ~2e-10, too narrow for the
export check against Keras; the softmax is one small op), at 50% group
unit pruning (`compute_masks(model, 0.5, targeting="unit", groups=True)` then
`keras_tdrop.pruning.shrink`: every channel group of the dependency graph
(residual Adds, depthwise convolutions, squeeze-excite) loses the same
half; the stem and the logits stay whole). Both the dense and the shrunk
model are converted with `keras_tdrop.export.to_tflite` (checked against
Keras there) and timed in one process, batch 1, float32, XNNPACK with one
thread, in turns (dense, shrunk, order rotated every round, `--inner`
invocations per round); each model's pair is timed on its own. The target:
latency ratio dense / shrunk (median of per-round ratios, process CPU
time) >= 0.8 x the FLOP ratio (`keras_tdrop.pruning.flops`, MACs).
The table's "other values" are what the file's other ops (activations,
merges, squeeze-excite means and gates) read or write per invocation, the
work MACs do not count, and "other ratio" is its dense / shrunk ratio.

    python benchmarks/group_shrink_speed.py
    python benchmarks/group_shrink_speed.py --full       # more rounds
    python benchmarks/group_shrink_speed.py --blocks     # time per block
    python benchmarks/group_shrink_speed.py --models EfficientNetB0-relu
    python benchmarks/group_shrink_speed.py --models EfficientNetB0-batch1
    python benchmarks/group_shrink_speed.py --round-to 8   # XNNPACK widths
    python benchmarks/group_shrink_speed.py --prune-stem   # stem's group too
    python benchmarks/group_shrink_speed.py --size 64      # smaller inputs

`--size` builds the models on smaller (or larger) square inputs: the MACs
fall with the number of positions, the number of ops and their fixed cost
per invocation do not, so the latencies at a small size show what a model
costs whatever its channels.
"""

import atexit
import os
import re
import shutil
import tempfile

import _bench
import keras
import numpy as np
from keras.src.applications import efficientnet

from keras_tdrop.export import to_tflite
from keras_tdrop.pruning import flops
from keras_tdrop.pruning import group_masks
from keras_tdrop.pruning import shrink

MODELS = {
    "MobileNetV2": lambda size: keras.applications.MobileNetV2(
        input_shape=(size, size, 3),
        alpha=1.0,
        weights=None,
        classes=1000,
        classifier_activation=None,
    ),
    "EfficientNetB0": lambda size: keras.applications.EfficientNetB0(
        input_shape=(size, size, 3),
        weights=None,
        classes=1000,
        classifier_activation=None,
    ),
}
# Not run by default (`--models` to run them): EfficientNetB0 with ReLU
# instead of swish (Keras' private EfficientNet builder), to see what the
# swish's elementwise work, which MACs do not count, costs the shrunk
# model; and on an input of batch size 1, so that the squeeze-excite
# Reshapes have static shapes (with a free batch size the converter emits
# SHAPE/STRIDED_SLICE/PACK ops there, which XNNPACK does not take: the
# graph runs as 17 delegate partitions with built-in ops between them).
EXTRA = {
    "EfficientNetB0-batch1": lambda size: keras.applications.EfficientNetB0(
        input_tensor=keras.Input((size, size, 3), batch_size=1),
        weights=None,
        classes=1000,
        classifier_activation=None,
    ),
    "EfficientNetB0-relu": lambda size: efficientnet.EfficientNet(
        1.0,
        1.0,
        size,
        0.2,
        activation="relu",
        name="efficientnetb0_relu",
        input_shape=(size, size, 3),
        weights=None,
        classes=1000,
        classifier_activation=None,
    ),
}


def interpreter(model, x, path, threads):
    from ai_edge_litert import interpreter as litert

    export = to_tflite(model, path, sample=x, repeats=1, num_threads=threads)
    runner = litert.Interpreter(model_path=path, num_threads=threads)
    runner.allocate_tensors()
    runner.set_tensor(runner.get_input_details()[0]["index"], x)
    runner.invoke()
    return runner, export


# Ops whose work MACs count; the shape ops move no values.
MATRIX_OPS = {"CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED"}
SHAPE_OPS = {"SHAPE", "STRIDED_SLICE", "PACK", "RESHAPE", "SQUEEZE"}


def elementwise_values(path):
    """Values that the file's other ops (activations, merges, means,
    gates) read or write per invocation: for each op, its largest
    activation tensor. The work MACs do not count."""
    from ai_edge_litert import interpreter as litert

    # Without the XNNPACK delegate, so that every op is listed.
    runner = litert.Interpreter(
        model_path=path,
        experimental_op_resolver_type=(
            litert.OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES
        ),
    )
    runner.allocate_tensors()
    sizes = {
        t["index"]: int(np.prod(t["shape"]))
        for t in runner.get_tensor_details()
    }
    total = 0
    for op in runner._get_ops_details():
        if op["op_name"] in MATRIX_OPS | SHAPE_OPS:
            continue
        tensors = [i for i in (*op["inputs"], *op["outputs"]) if i >= 0]
        total += max(sizes.get(i, 0) for i in tensors)
    return total


def cost_model(points):
    """Fits CPU time = a x MACs + b x other values over every timed model
    (least squares, no intercept) and prints each model's fitted time:
    how much of the latency the two kinds of work explain."""
    design = np.array([[m, o] for _, m, o, _ in points], dtype=float)
    seconds = np.array([t for *_, t in points])
    (a, b), *_ = np.linalg.lstsq(design, seconds, rcond=None)
    print(
        f"cost model over {len(points)} models: {a * 1e12:.1f} ps per MAC, "
        f"{b * 1e9:.2f} ns per other value"
    )
    rows = []
    for (label, m, o, t), fit in zip(points, design @ [a, b]):
        rows.append(
            [
                label,
                f"{t * 1e3:.2f}",
                f"{fit * 1e3:.2f}",
                f"{a * m / fit:.0%}",
            ]
        )
    _bench.table(["model", "CPU ms", "fitted ms", "MAC share of fit"], rows)


def timed(runners, reps, inner):
    fns = {name: r.invoke for name, r in runners.items()}
    return _bench.interleave(fns, reps, warmup=3, inner=inner, progress=False)


def speedup(times, baseline, name):
    """`(q1, median, q3)` of the per-round ratios baseline / name."""
    return _bench.quartiles(
        [a / b for a, b in zip(times[baseline], times[name])]
    )


def block_ends(model):
    """The last layer of each block (`block_3_...`, `block2a_...`,
    `expanded_conv_...`); the layers before the first block form the
    stem, those after the last the top."""
    ends, previous, seen = [], None, False
    for layer in model.layers[1:]:
        match = re.match(r"(block_?\d+[a-z]?|expanded_conv)_", layer.name)
        seen = seen or bool(match)
        prefix = match.group(1) if match else ("top" if seen else "stem")
        if previous is not None and prefix != previous[0]:
            ends.append(previous[1])
        previous = (prefix, layer.name)
    ends.append(previous[1])
    return ends


def block_times(name, dense, small, x, folder, reps, inner, threads):
    """Prints the CPU time after each block of both models (sub-models
    ending there) and each block's own increment beside its MACs."""
    runners, macs = {}, {}
    ends = block_ends(dense)
    for label, model in (("dense", dense), ("shrunk", small)):
        for end in ends:
            sub = keras.Model(model.input, model.get_layer(end).output)
            key = f"{label}:{end}"
            path = os.path.join(folder, f"{name}_{label}_{end}.tflite")
            runners[key], _ = interpreter(sub, x, path, threads)
            macs[key] = flops(sub)
    times = timed(runners, reps, inner)
    rows, before = [], {"dense": (0.0, 0), "shrunk": (0.0, 0)}
    for end in ends:
        row = [end]
        own = {}
        for label in ("dense", "shrunk"):
            key = f"{label}:{end}"
            t = _bench.quartiles(times.cpu[key])[1] * 1e3
            m = macs[key]
            own[label] = (t - before[label][0], m - before[label][1])
            before[label] = (t, m)
            row += [f"{own[label][0]:.3f}", f"{own[label][1] / 1e6:.1f}"]
        d, s = own["dense"], own["shrunk"]
        row += [
            f"{d[0] / s[0]:.2f}" if s[0] > 0 else "-",
            f"{d[1] / s[1]:.2f}" if s[1] else "-",
        ]
        rows.append(row)
    print(f"{name}: CPU ms and MACs (M) of each block (increments):")
    _bench.table(
        [
            "block ends at",
            "dense ms",
            "dense MMACs",
            "shrunk ms",
            "shrunk MMACs",
            "time ratio",
            "MAC ratio",
        ],
        rows,
    )


def main():
    p = _bench.parser(__doc__.splitlines()[0])
    p.add_argument("--fraction", type=float, default=0.5)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--inner", type=int, default=None)
    p.add_argument(
        "--models", default=",".join(MODELS), help="comma-separated names"
    )
    p.add_argument(
        "--blocks", action="store_true", help="time after each block too"
    )
    p.add_argument(
        "--prune-stem",
        action="store_true",
        help="prune the stem's channel group too (group_masks keep_stem)",
    )
    p.add_argument(
        "--round-to",
        type=int,
        default=None,
        help="keep a multiple of this many channels per group",
    )
    p.add_argument(
        "--size", type=int, default=224, help="input height and width"
    )
    args = p.parse_args()
    if args.size < 32:
        p.error(f"--size must be at least 32. Received: {args.size}")
    reps = args.reps or (30 if args.full else 15)
    inner = args.inner or (10 if args.full else 5)
    keras.utils.set_random_seed(0)
    x = np.random.default_rng(0).random(
        (1, args.size, args.size, 3), dtype=np.float32
    )
    folder = tempfile.mkdtemp(prefix="tdrop_bench_")
    atexit.register(shutil.rmtree, folder, True)
    print(
        f"LiteRT float32, batch 1, {args.size}x{args.size}, "
        f"{args.threads} thread(s), "
        f"{args.fraction:.0%} group unit pruning"
        f"{f' (round_to={args.round_to})' if args.round_to else ''}"
        f"{' (stem pruned too)' if args.prune_stem else ''}; "
        f"{reps} rounds x {inner}; "
        f"{_bench.load()}",
        flush=True,
    )
    rows, results, cost_points = [], [], []
    for name in args.models.split(","):
        dense = {**MODELS, **EXTRA}[name](args.size)
        masks = group_masks(
            dense,
            args.fraction,
            round_to=args.round_to,
            keep_stem=not args.prune_stem,
        )
        small, report = shrink(dense, masks)
        runners, exports, other = {}, {}, {}
        for label, model in (("dense", dense), ("shrunk", small)):
            path = os.path.join(folder, f"{name}_{label}.tflite")
            runners[label], exports[label] = interpreter(
                model, x, path, args.threads
            )
            other[label] = elementwise_values(path)
        print(
            f"{name}: shrink removed {report.removed:,} of {report.zeroed:,} "
            f"zeroed channels ({report.removed_fraction:.0%}), max |shrunk - "
            f"masked| {report.max_abs_diff:.2g}; LiteRT max |diff| "
            f"{exports['shrunk'].max_abs_diff:.2g}",
            flush=True,
        )
        times = timed(runners, reps, inner)
        macs = {"dense": flops(dense), "shrunk": flops(small)}
        flop_ratio = macs["dense"] / macs["shrunk"]
        params = {"dense": dense.count_params(), "shrunk": small.count_params()}
        cpu = speedup(times.cpu, "dense", "shrunk")
        wall = speedup(times, "dense", "shrunk")
        for label in ("dense", "shrunk"):
            cpu_s = _bench.quartiles(times.cpu[label])[1]
            cost_points.append(
                (f"{name} {label}", macs[label], other[label], cpu_s)
            )
            rows.append(
                [
                    f"{name} {label}",
                    f"{params[label]:,}",
                    f"{macs[label]:,}",
                    f"{other[label]:,}",
                    f"{exports[label].bytes:,}",
                    f"{cpu_s * 1e3:.2f}",
                    f"{_bench.quartiles(times[label])[1] * 1e3:.2f}",
                    "" if label == "dense" else f"{flop_ratio:.2f}",
                    ""
                    if label == "dense"
                    else f"{other['dense'] / other['shrunk']:.2f}",
                    ""
                    if label == "dense"
                    else f"{cpu[1]:.2f} ({cpu[0]:.2f}-{cpu[2]:.2f})",
                    "" if label == "dense" else f"{wall[1]:.2f}",
                    "" if label == "dense" else f"{cpu[1] / flop_ratio:.2f}",
                ]
            )
        results.append((name, cpu[1], wall[1], flop_ratio))
        if args.blocks:
            block_times(
                name, dense, small, x, folder, reps, inner, args.threads
            )
    _bench.table(
        [
            "model",
            "params",
            "MACs",
            "other values",
            "bytes",
            "CPU ms",
            "wall ms",
            "FLOP ratio",
            "other ratio",
            "latency ratio CPU (IQR)",
            "wall",
            "ratio/FLOP",
        ],
        rows,
    )
    if len(cost_points) >= 4:
        cost_model(cost_points)
    for name, cpu, wall, flop_ratio in results:
        _bench.result(
            f"issue 13 {name} {args.fraction:.0%} groups: latency ratio "
            f"dense/shrunk / FLOP ratio ({cpu:.2f}x vs {flop_ratio:.2f}x; "
            f"wall {wall:.2f}x)",
            cpu / flop_ratio,
            0.8,
            higher_is_better=True,
            fmt="{:.2f}",
        )


if __name__ == "__main__":
    main()
