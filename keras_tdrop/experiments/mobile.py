"""`keras-tdrop mobile`: a small MobileNetV2-style CIFAR-10 network,
pruned by channel groups, shrunk and deployed: accuracy, size and LiteRT
latency against the prune fraction."""

import os
import time

import keras
import numpy as np

from keras_tdrop.experiments import _plots
from keras_tdrop.experiments import datasets
from keras_tdrop.experiments import models
from keras_tdrop.export import predict_tflite
from keras_tdrop.export import tflite_latency
from keras_tdrop.export import to_tflite
from keras_tdrop.pruning.flops import flops
from keras_tdrop.pruning.masks import apply_masks
from keras_tdrop.pruning.masks import compute_masks
from keras_tdrop.pruning.plots import figure
from keras_tdrop.pruning.plots import save_png
from keras_tdrop.pruning.recalibrate import recalibrate_batchnorm
from keras_tdrop.pruning.report import format_rows
from keras_tdrop.pruning.report import write_csv
from keras_tdrop.pruning.shrink import shrink
from keras_tdrop.pruning.sweep import check_fractions

__all__ = ["COLUMNS", "FRACTIONS", "plot", "run_mobile"]

LATENCY_ROUNDS = 10
FRACTIONS = (0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7)
COLUMNS = (
    "prune_fraction",
    "params",
    "macs",
    "tflite_bytes",
    "latency_ms",
    "speedup",
    "accuracy_masked",
    "accuracy_shrunk",
    "accuracy_tflite",
    "accuracy_stale_bn",
)
BN_NOTE = (
    "Note: after pruning, every model's BatchNormalization statistics were "
    "recalibrated on {count} training images (`recalibrate_batchnorm`); "
    "accuracy_stale_bn is the shrunk model with the statistics it was "
    "trained with: removing channels changes what the following layers "
    "see, and their old moving means and variances no longer match."
)


def _accuracy(logits, labels):
    return float(np.mean(np.argmax(logits, axis=-1) == labels))


def run_mobile(
    out_dir="mobile_out",
    data_dir=None,
    epochs=3,
    batch_size=64,
    train_limit=10000,
    test_limit=2000,
    fractions=FRACTIONS,
    seed=0,
    latency_repeats=500,
    recalibrate=256,
    verbose=1,
):
    """Trains `models.mobile_cnn` on CIFAR-10, prunes it by channel groups,
    shrinks and exports it at every fraction.

    For every fraction p: `compute_masks(model, p, targeting="unit",
    groups=True)` (every channel group of the dependency graph, residual
    Adds, depthwise convolutions and the squeeze-excite included, loses the
    same lowest-importance channels; the stem and logits stay whole),
    `shrink` (the channels removed for real), `to_tflite` (float32, checked
    against Keras). Accuracy is measured on the masked model, on the shrunk
    one and on the `.tflite` file; latency is LiteRT's batch-1 time with
    one thread (XNNPACK), all files timed in turns (the median of
    per-round medians), and `speedup` the first row's latency over each
    row's. Before evaluating, the masked and the shrunk model's
    BatchNormalization statistics are recalibrated on the first
    `recalibrate` training images (`accuracy_stale_bn`: the shrunk model
    without it). The rows are printed as a table and written to
    `mobile.csv`, `mobile.png` (accuracy and latency against the fraction)
    and `mobile_{p}.tflite` in `out_dir`.

    Args:
        out_dir: folder for the outputs (created if missing).
        data_dir: TFDS data directory; default `$TFDS_DATA_DIR`.
        epochs: int, training epochs.
        batch_size: int.
        train_limit: int or None, train on the first examples only.
        test_limit: int or None, evaluate on the first examples only.
        fractions: prune fractions in [0, 1).
        seed: int for the initial weights and the data order.
        latency_repeats: int, timed invocations per model (in
            `LATENCY_ROUNDS` rounds, the models in turns).
        recalibrate: int, training images to recalibrate BatchNorm
            statistics on after pruning (0: never).
        verbose: 0 silent, 1 progress bars, progress lines and the table,
            2 one line per epoch.

    Returns:
        A list of dicts, one per fraction, with the keys of `COLUMNS`.

    Example:
    >>> rows = run_mobile("mobile_out", epochs=1, train_limit=2000)
    >>> rows[-1]["latency_ms"] < rows[0]["latency_ms"]
    """
    fractions = check_fractions(fractions)
    can_plot = _plots.can_plot("mobile.png")
    say = print if verbose else (lambda *args, **kwargs: None)
    start = time.perf_counter()
    train = datasets.load(
        "cifar10",
        "train",
        batch_size=batch_size,
        data_dir=data_dir,
        shuffle=True,
        seed=seed,
        limit=train_limit,
    )
    x_test, y_test = datasets.load_numpy(
        "cifar10", "test", data_dir=data_dir, limit=test_limit
    )
    x_calib = None
    if recalibrate:
        x_calib, _ = datasets.load_numpy(
            "cifar10", "train", data_dir=data_dir, limit=recalibrate
        )
    os.makedirs(out_dir, exist_ok=True)
    keras.utils.set_random_seed(seed)
    model = models.mobile_cnn()
    model.compile(
        optimizer=keras.optimizers.Adam(2e-3),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    say(
        f"Training mobile_cnn ({model.count_params():,} parameters) on "
        f"CIFAR-10 for {epochs} epochs.",
        flush=True,
    )
    model.fit(train, epochs=epochs, shuffle=False, verbose=verbose)
    say(f"Trained ({time.perf_counter() - start:.0f} s). Pruning.", flush=True)
    rows, paths = [], []
    for fraction in fractions:
        masks = compute_masks(model, fraction, targeting="unit", groups=True)
        masked = apply_masks(model, masks) if masks else model
        small, report = shrink(model, masks)
        stale = _accuracy(
            small.predict(x_test, batch_size=500, verbose=0), y_test
        )
        if x_calib is not None:
            masked = recalibrate_batchnorm(masked, x_calib)
            small = recalibrate_batchnorm(small, x_calib, inplace=True)
        path = os.path.join(out_dir, f"mobile_{round(fraction * 100)}.tflite")
        export = to_tflite(small, path, sample=x_test[:16], repeats=1)
        row = {
            "prune_fraction": fraction,
            "params": small.count_params(),
            "macs": flops(small),
            "tflite_bytes": export.bytes,
            "latency_ms": None,
            "speedup": None,
            "accuracy_masked": _accuracy(
                masked.predict(x_test, batch_size=500, verbose=0), y_test
            ),
            "accuracy_shrunk": _accuracy(
                small.predict(x_test, batch_size=500, verbose=0), y_test
            ),
            "accuracy_tflite": _accuracy(predict_tflite(path, x_test), y_test),
            "accuracy_stale_bn": stale,
        }
        rows.append(row)
        paths.append(path)
        say(
            f"  {fraction:.0%}: {report.removed:,} channels removed, "
            f"{row['params']:,} parameters, {row['macs']:,} MACs, "
            f"{row['tflite_bytes']:,} bytes, accuracy "
            f"{row['accuracy_shrunk']:.4f} "
            f"({time.perf_counter() - start:.0f} s)",
            flush=True,
        )
    say(
        f"Timing the {len(paths)} .tflite files in turns "
        f"({LATENCY_ROUNDS} rounds).",
        flush=True,
    )
    for row, latency in zip(
        rows, _latencies(paths, x_test[:1], latency_repeats)
    ):
        row["latency_ms"] = latency
        row["speedup"] = rows[0]["latency_ms"] / latency
    write_csv(rows, os.path.join(out_dir, "mobile.csv"))
    if can_plot:
        plot(rows, os.path.join(out_dir, "mobile.png"))
    say("")
    say(format_rows(rows, COLUMNS))
    if x_calib is not None:
        say("\n" + BN_NOTE.format(count=len(x_calib)))
    say(
        f"\nWrote {os.path.join(out_dir, 'mobile.csv')}"
        + (", mobile.png" if can_plot else "")
        + f" and the .tflite files ({time.perf_counter() - start:.0f} s)."
    )
    return rows


def _latencies(paths, x, repeats):
    """Median batch-1 milliseconds of each file, timed in turns: every
    round runs each file `repeats // LATENCY_ROUNDS` times, the order
    rotated, so a change of the machine's load touches all alike."""
    inner = max(1, repeats // LATENCY_ROUNDS)
    times = [[] for _ in paths]
    for r in range(LATENCY_ROUNDS):
        order = list(range(len(paths)))
        order = order[r % len(order) :] + order[: r % len(order)]
        for i in order:
            times[i].append(tflite_latency(paths[i], x, inner, num_threads=1))
    return [float(np.median(t)) for t in times]


def plot(rows, path):
    """Accuracy (masked, shrunk, TFLite) and latency against the fraction."""
    fig = figure((10, 4), "mobile's plot")
    percent = [row["prune_fraction"] * 100 for row in rows]
    left, right = fig.subplots(1, 2)
    for key, marker in (
        ("accuracy_masked", "o"),
        ("accuracy_shrunk", "s"),
        ("accuracy_tflite", "x"),
    ):
        left.plot(percent, [row[key] for row in rows], f"{marker}-", label=key)
    left.set_ylabel("test accuracy")
    left.set_ylim(0.0, 1.0)
    right.plot(percent, [row["latency_ms"] for row in rows], "o-")
    right.set_ylabel("LiteRT latency, batch 1, 1 thread (ms)")
    right.set_ylim(bottom=0.0)
    for ax in (left, right):
        ax.set_xlabel("channels pruned per group (%)")
        ax.grid(alpha=0.3)
    left.legend()
    fig.suptitle("mobile_cnn on CIFAR-10, group unit pruning, shrunk")
    fig.tight_layout()
    return save_png(fig, path)
