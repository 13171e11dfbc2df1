"""Reports: sparsity per layer, sweep progress, CSV files.

Reports are data first (lists of row dicts), printed as fixed-width tables
(`tables.py`) and written as CSV and PNG (`plots.py`) second. Every file
is written atomically (`atomic_write`): a failed write leaves no partial
file behind.
"""

import csv

import keras
import numpy as np
from keras import ops

from keras_tdrop.atomic_write import atomic_write
from keras_tdrop.kernels import iter_layers
from keras_tdrop.kernels import kernel_variables
from keras_tdrop.pruning.flops import flops
from keras_tdrop.pruning.flops import macs_by_call
from keras_tdrop.pruning.plots import XLABELS
from keras_tdrop.pruning.plots import plot_sweeps
from keras_tdrop.pruning.tables import compare_sweeps
from keras_tdrop.pruning.tables import format_rows
from keras_tdrop.pruning.tables import format_sweep

__all__ = [
    "SIZE_COLUMNS",
    "XLABELS",
    "compare_sweeps",
    "compression",
    "flops_or_none",
    "format_rows",
    "format_sweep",
    "measured",
    "plot_sweeps",
    "print_progress",
    "sparsity_report",
    "speedup",
    "write_csv",
]

# The columns of a prune_sweep row that count the model, not its metrics.
SIZE_COLUMNS = (
    "parameters",
    "nonzero",
    "compression",
    "flops",
    "speedup",
    "recalibrated",
)


def sparsity_report(model, verbose=1, dense=None):
    """Per layer with kernels, and in total: how much pruning removed.

    Row keys: `layer`, `parameters` (all the layer's weights), `weights`
    (its kernel entries), `zeros` (kernel entries equal to 0), `sparsity`
    (`zeros / weights`), `units` (kernel columns: output units or
    filters), `zero_units` (columns entirely zero), `nonzero` (weights of
    the layer that are not 0, biases and statistics included),
    `compression` (`parameters / nonzero`) and `flops` (the layer's
    multiply-accumulates per example, every call; zero weights count, so
    only shrinking lowers it; None for a model without a graph or an
    input shape, see `flops`). With `dense`, a `speedup` column: the
    FLOPs of the layer of the same name in `dense` over this one's (the
    theoretical speed-up of a shrunk model; 1.0 for a masked one). The
    last row, `layer="total"`, sums them over the model.

    Args:
        model: a built `keras.Model`.
        verbose: 1 prints the table, 0 nothing.
        dense: optional, the model before pruning or shrinking.

    Returns:
        The rows, as a list of dicts.

    Example:
    >>> rows = sparsity_report(shrink(pruned), dense=model)
    >>> rows[-1]["compression"], rows[-1]["speedup"]
    """
    for name, value in (("model", model), ("dense", dense)):
        if not isinstance(value, keras.Model) and (
            name == "model" or value is not None
        ):
            raise TypeError(
                f"`{name}` must be a keras.Model. Received: {name}={value!r}"
            )
    macs = _macs_by_layer(model)
    rows = []
    for layer in iter_layers(model):
        kernels = kernel_variables(getattr(layer, "layer", layer))
        if not kernels:
            continue
        row = {
            "layer": layer.name,
            "parameters": layer.count_params(),
            "weights": 0,
            "zeros": 0,
            "units": 0,
            "zero_units": 0,
            "nonzero": _nonzero(layer.weights),
            "flops": None if macs is None else macs.get(id(layer), 0),
        }
        for kernel in kernels:
            value = ops.convert_to_numpy(kernel.value)
            matrix = value.reshape(-1, value.shape[-1])
            row["weights"] += value.size
            row["zeros"] += int(np.count_nonzero(value == 0))
            row["units"] += matrix.shape[1]
            row["zero_units"] += int(np.sum(~matrix.any(axis=0)))
        rows.append(row)
    total = {
        "layer": "total",
        "parameters": model.count_params(),
        "nonzero": _nonzero(model.weights),
        "flops": None if macs is None else sum(macs.values()),
    }
    for key in ("weights", "zeros", "units", "zero_units"):
        total[key] = sum(row[key] for row in rows)
    rows.append(total)
    for row in rows:
        row["sparsity"] = row["zeros"] / max(row["weights"], 1)
        row["compression"] = compression(row["parameters"], row["nonzero"])
    columns = [
        "layer",
        "parameters",
        "weights",
        "zeros",
        "sparsity",
        "units",
        "zero_units",
        "nonzero",
        "compression",
        "flops",
    ]
    if dense is not None:
        _add_speedups(rows, dense)
        columns.append("speedup")
    rows = [{c: row[c] for c in columns} for row in rows]
    if verbose:
        print(format_rows(rows), flush=True)
    return rows


def compression(parameters, nonzero):
    """`parameters / nonzero` (inf when every parameter is 0)."""
    return parameters / nonzero if nonzero else float("inf")


def speedup(flops_or_none, flops):
    """`flops_or_none / flops`, or None where either is unknown or 0."""
    if not flops_or_none or not flops:
        return None
    return flops_or_none / flops


def flops_or_none(model):
    """`flops(model)`, or None for a model without a graph or a known
    input shape (reports show no FLOPs for it rather than fail)."""
    try:
        return flops(model)
    except ValueError:
        return None


def _macs_by_layer(model):
    """`{id(layer): MACs of all its calls}`, or None (see `flops_or_none`)."""
    try:
        calls = list(macs_by_call(model))
    except ValueError:
        return None
    macs = {}
    for op, count in calls:
        macs[id(op)] = macs.get(id(op), 0) + count
    return macs


def _nonzero(variables):
    return sum(
        int(np.count_nonzero(ops.convert_to_numpy(v.value))) for v in variables
    )


def _add_speedups(rows, dense):
    by_name = {}
    macs = _macs_by_layer(dense) or {}
    for layer in iter_layers(dense):
        if id(layer) in macs:
            by_name[layer.name] = macs[id(layer)]
    for row in rows[:-1]:
        row["speedup"] = speedup(by_name.get(row["layer"]), row["flops"])
    rows[-1]["speedup"] = speedup(sum(macs.values()), rows[-1]["flops"])


def measured(row):
    """The keys of a `prune_sweep` row that `evaluate` returned (`loss`,
    `accuracy`, ...), in its order."""
    counts = ("fraction", "sparsity") + SIZE_COLUMNS
    return [k for k in row if k not in counts]


def print_progress(row, step, steps):
    """Prints a line per measured fraction: `prune_sweep(...,
    progress=print_progress)`.

    Example:
    >>> rows = prune_sweep(model, test_ds, progress=print_progress)
    """
    if not isinstance(row, dict) or not {"fraction", "sparsity"} <= set(row):
        raise TypeError(
            "`row` must be a prune_sweep row (a dict with 'fraction' and "
            f"'sparsity'). Received: row={row!r}"
        )
    shown = ", ".join(f"{k} {row[k]:.4f}" for k in measured(row))
    print(
        f"[{step}/{steps}] pruned {row['fraction']:.0%} "
        f"(sparsity {row['sparsity']:.4f}): {shown}",
        flush=True,
    )


def write_csv(rows, path, columns=None, float_format=".6f"):
    """Writes rows of dicts to a CSV file, atomically: the package's one
    CSV writer.

    Args:
        rows: dicts; a key a row lacks is written empty, as is None.
        path: the file.
        columns: the keys written, in order (default: the first row's;
            then a row with another key is a ValueError).
        float_format: the format of floats.

    Example:
    >>> write_csv(rows, "sweep.csv")
    """
    if isinstance(rows, (str, bytes, dict)):
        raise TypeError(
            f"`rows` must be a list of dicts. Received: rows={rows!r}"
        )
    rows = list(rows)
    for i, row in enumerate(rows):
        if not isinstance(row, dict):
            raise TypeError(
                f"`rows` must be a list of dicts. Received: rows[{i}]={row!r}"
            )
    if columns is None:
        columns, extra = (list(rows[0]) if rows else []), "raise"
    else:
        columns, extra = list(columns), "ignore"
    with atomic_write(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns, extrasaction=extra)
        writer.writeheader()
        for row in rows:
            writer.writerow(
                {
                    k: format(v, float_format)
                    if isinstance(v, (float, np.floating))
                    else v
                    for k, v in row.items()
                }
            )
    return path
