"""One TFLite file per width of a Triangular Dropout model, and their table."""

import csv
import os

import keras
import numpy as np

from keras_tdrop.atomic_write import atomic_write
from keras_tdrop.export.interpreter import predict_tflite
from keras_tdrop.export.tflite import to_tflite
from keras_tdrop.kernels import check_model
from keras_tdrop.layers.model_ordered_dropout import ModelOrderedDropout
from keras_tdrop.pruning.flops import flops
from keras_tdrop.pruning.recalibrate import batchnorm_layers
from keras_tdrop.truncation import recalibration_batches
from keras_tdrop.truncation import truncate

__all__ = ["export_widths", "format_width_table", "write_width_csv"]

BASE_COLUMNS = (
    "width",
    "params",
    "macs",
    "bytes",
    "latency_ms",
    "max_abs_diff",
)


def _check_widths(widths):
    """Ints >= 1 (units of TriangularDropout layers) or fractions in
    (0, 1] (of every channel group), not mixed."""
    single = isinstance(widths, (int, float, np.integer, np.floating))
    widths = [widths] if single else list(widths)
    ints = all(
        isinstance(w, (int, np.integer)) and not isinstance(w, bool) and w >= 1
        for w in widths
    )
    fractions = all(
        isinstance(w, (float, np.floating)) and 0.0 < w <= 1.0 for w in widths
    )
    if not widths or not (ints or fractions):
        raise ValueError(
            "`widths` must be a non-empty list of ints >= 1 (the units of "
            "TriangularDropout layers) or of fractions in (0, 1] (of every "
            "channel group of a model trained with ModelOrderedDropout). "
            f"Received: widths={widths!r}"
        )
    return [int(w) if ints else float(w) for w in widths]


def _metric(metric, model):
    """`(name, function of (y_true, y_pred) -> float)`."""
    if metric is None:
        metric = getattr(model, "loss", None)
        if metric is None:
            raise ValueError(
                "`data` was given without `metric`, and the model is not "
                "compiled with a loss to use instead. Pass e.g. "
                "metric='sparse_categorical_accuracy'. Received: metric=None"
            )
    if isinstance(metric, str):
        try:
            found = keras.metrics.get(metric)
        except ValueError:
            found = keras.losses.get(metric)
        name, metric = metric, found
    else:
        name = getattr(metric, "name", None) or getattr(
            metric, "__name__", type(metric).__name__
        )
    if isinstance(metric, type):
        metric = metric()
    if isinstance(metric, keras.metrics.Metric):

        def evaluate(y_true, y_pred):
            metric.reset_state()
            metric.update_state(y_true, y_pred)
            return float(metric.result())

    elif callable(metric):

        def evaluate(y_true, y_pred):
            return float(keras.ops.mean(metric(y_true, y_pred)))

    else:
        raise ValueError(
            "`metric` must be a Keras metric or loss (name or object) or a "
            f"callable (y_true, y_pred). Received: metric={metric!r}"
        )
    return name, evaluate


def _unpack(data):
    if not isinstance(data, (tuple, list)) or len(data) != 2:
        raise ValueError(
            "`data` must be a pair (x, y) of arrays. "
            f"Received: data of type {type(data).__name__}"
        )
    return data


def export_widths(
    model,
    widths,
    out_dir,
    data=None,
    metric=None,
    name=None,
    batch_size=256,
    recalibrate=None,
    verbose=1,
    **tflite_options,
):
    """Exports a model trained for any width at several widths, one
    `.tflite` file each, and returns their table.

    For each width w, `keras_tdrop.truncate(model, w)` builds the plain
    narrower model and `keras_tdrop.export.to_tflite` converts it, checks
    the file's outputs against Keras in LiteRT and writes it atomically to
    `out_dir/<name>_w<w>.tflite`. With `data`, the file itself is run in
    LiteRT on `data` and `metric` is computed on its outputs. The rows are
    also written to `out_dir/<name>_widths.csv`, and a progress line is
    printed per width.

    Args:
        model: a Keras model with `TriangularDropout` layers, or a graph
            model trained with ordered channel dropout (`ModelOrderedDropout`
            or its `.model`); not modified.
        widths: ints, the widths to export (each TriangularDropout layer is
            truncated to the same width), or fractions in (0, 1] of every
            channel group (see `truncate`).
        out_dir: folder for the files (created if missing).
        data: optional `(x, y)` arrays to evaluate each file on.
        metric: what to compute on `data`: a Keras metric or loss, by name
            (`"sparse_categorical_accuracy"`, `"binary_crossentropy"`; as
            `keras.metrics.get` resolves it) or object, or a callable
            `(y_true, y_pred)` whose mean is taken; default the model's
            compiled loss.
        name: file name prefix (default the model's name).
        batch_size: int, rows per LiteRT call on `data`.
        recalibrate: optional data to recalibrate each truncated model's
            BatchNormalization statistics on after cutting (see
            `truncate`), as slimmable networks do per width; what
            `recalibrate_batchnorm` takes.
        verbose: 0 silent, 1 a line per width.
        **tflite_options: passed to `to_tflite` (`sample`, `repeats` to
            time each file, `quantize`, `representative_data`,
            `num_threads`, ...).

    Returns:
        A list of dicts, one per width: `width`, `params` and `macs` (per
        example; `keras_tdrop.pruning.flops`) of the truncated Keras model,
        `bytes`, `latency_ms` (median ms per batch when
        `repeats` is given, see `to_tflite`; else None), `max_abs_diff`
        (LiteRT vs Keras), the metric under its name when `data` is
        given, `recalibrated` (whether BatchNormalization statistics were
        re-estimated for that width) and `path`.

    Example:
    >>> rows = export_widths(model, [4, 8, 16, 32], "tflite_out",
    ...     data=(x_test, y_test), metric="sparse_categorical_accuracy",
    ...     repeats=50)
    >>> print(format_width_table(rows))
    """
    widths = _check_widths(widths)
    check_model(model)
    truncate_options = {}
    if isinstance(model, ModelOrderedDropout):
        truncate_options = {
            "round_to": model.round_to,
            "exclude": model.exclude,
            "exclude_logits": model.exclude_logits,
        }
        model = model.model
    if data is not None:
        x, y = _unpack(data)
        metric_name, evaluate = _metric(metric, model)
    if recalibrate is not None:
        recalibrate = recalibration_batches(model, recalibrate)
    # Truncate every width before writing anything: bad widths fail first.
    small = {
        w: truncate(model, w, recalibrate=recalibrate, **truncate_options)
        for w in widths
    }
    name = name or model.name
    os.makedirs(out_dir, exist_ok=True)
    rows = []
    for i, w in enumerate(widths, start=1):
        path = os.path.join(out_dir, f"{name}_w{w}.tflite")
        result = to_tflite(small[w], path, **tflite_options)
        row = {
            "width": w,
            "params": small[w].count_params(),
            "macs": flops(small[w]),
            "bytes": result.bytes,
            "latency_ms": result.latency_ms,
            "max_abs_diff": result.max_abs_diff,
        }
        if data is not None:
            row[metric_name] = evaluate(
                y, predict_tflite(result.path, x, batch_size=batch_size)
            )
        row["recalibrated"] = recalibrate is not None and bool(
            batchnorm_layers(small[w])
        )
        row["path"] = result.path
        rows.append(row)
        if verbose:
            print(f"[{i}/{len(widths)}] " + _format_row(row))
    write_width_csv(rows, os.path.join(out_dir, f"{name}_widths.csv"))
    return rows


def _extra_columns(rows):
    return [
        k
        for k in rows[0]
        if k not in BASE_COLUMNS and k not in ("path", "recalibrated")
    ]


def _format_row(row):
    text = f"width {row['width']}: {row['params']:,} params, "
    if row.get("macs") is not None:
        text += f"{row['macs']:,} MACs, "
    text += f"{row['bytes']:,} bytes, "
    if row["latency_ms"] is not None:
        text += f"{row['latency_ms']:.3f} ms, "
    text += f"max |diff| {row['max_abs_diff']:.2g}"
    if row.get("recalibrated"):
        text += ", BatchNorm recalibrated"
    for key in _extra_columns([row]):
        text += f", {key} {row[key]:.4f}"
    return text


def format_width_table(rows):
    """The rows of `export_widths` as a fixed-width text table (`-` for
    latencies not timed)."""
    extra = {k: max(8, len(k)) for k in _extra_columns(rows)}
    header = (
        f"{'width':>6}  {'params':>12}  {'MACs':>12}  {'bytes':>12}  "
        f"{'ms':>8}  {'max|diff|':>9}"
    ) + "".join(f"  {k:>{n}}" for k, n in extra.items())
    lines = [
        header,
        "  ".join("-" * n for n in (6, 12, 12, 12, 8, 9, *extra.values())),
    ]
    for row in rows:
        ms = row["latency_ms"]
        ms = "-" if ms is None else f"{ms:.3f}"
        macs = row.get("macs")
        macs = "-" if macs is None else f"{macs:,}"
        lines.append(
            f"{row['width']:>6}  {row['params']:>12,}  {macs:>12}  "
            f"{row['bytes']:>12,}  {ms:>8}  {row['max_abs_diff']:>9.2g}"
            + "".join(f"  {row[k]:>{n}.4f}" for k, n in extra.items())
        )
    return "\n".join(lines)


def write_width_csv(rows, path):
    """Writes the rows to a CSV file, atomically (`atomic_write`); a
    latency not timed is an empty cell."""
    with atomic_write(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
