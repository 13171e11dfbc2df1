"""Reports: sparsity per layer, sweep tables, CSV files and plots.

Reports are data first (lists of row dicts), printed as fixed-width tables
and written as CSV and PNG second. Files are written atomically: a failed
write leaves no partial file behind.
"""

import contextlib
import csv
import os
import tempfile

import numpy as np
from keras import ops

from keras_tdrop.kernels import iter_layers
from keras_tdrop.kernels import kernel_variables
from keras_tdrop.optional_imports import require
from keras_tdrop.pruning.flops import flops
from keras_tdrop.pruning.flops import macs_by_call


def format_rows(rows, columns=None):
    """Rows of dicts as a fixed-width text table (floats with 4 decimals).

    Example:
    >>> print(format_rows([{"layer": "fc1", "sparsity": 0.5}]))
    """
    rows = list(rows)
    if columns is None:
        columns = list(rows[0]) if rows else []

    def text(value):
        if isinstance(value, (float, np.floating)):
            return f"{value:.4f}"
        return "" if value is None else str(value)

    cells = [[text(row.get(c)) for c in columns] for row in rows]
    widths = [
        max([len(c)] + [len(line[i]) for line in cells])
        for i, c in enumerate(columns)
    ]

    def line(values):
        return "  ".join(
            f"{v:<{w}}" if i == 0 else f"{v:>{w}}"
            for i, (v, w) in enumerate(zip(values, widths))
        ).rstrip()

    out = [line(columns), line(["-" * w for w in widths])]
    out.extend(line(values) for values in cells)
    return "\n".join(out)


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


def _check_sweeps(sweeps):
    if not isinstance(sweeps, dict) or not sweeps:
        raise ValueError(
            "`sweeps` must be a non-empty dict {model name: sweep rows}. "
            f"Received: sweeps={type(sweeps).__name__}"
        )
    fractions = None
    for name, rows in sweeps.items():
        these = [row["fraction"] for row in rows]
        if fractions is None:
            fractions = these
        elif these != fractions:
            raise ValueError(
                "Every sweep must have the same fractions. Received: "
                f"{name!r} has {these}, expected {fractions}"
            )


def compare_sweeps(sweeps, metric="accuracy"):
    """Sweeps of several models side by side: one row per fraction.

    Keys: `prune_fraction`, `sparsity` (or `sparsity_<name>` per model when
    the models' sparsities differ), and `<metric>_<name>` per model.

    Example:
    >>> rows = compare_sweeps({"plain": plain_rows, "targeted": td_rows})
    >>> rows[-1]["accuracy_targeted"]
    """
    _check_sweeps(sweeps)
    names = list(sweeps)
    columns = list(zip(*sweeps.values()))
    shared = all(
        len({row["sparsity"] for row in at_fraction}) == 1
        for at_fraction in columns
    )
    out = []
    for at_fraction in columns:
        row = {"prune_fraction": at_fraction[0]["fraction"]}
        if shared:
            row["sparsity"] = at_fraction[0]["sparsity"]
        for name, swept in zip(names, at_fraction):
            if not shared:
                row[f"sparsity_{name}"] = swept["sparsity"]
            row[f"{metric}_{name}"] = swept[metric]
        out.append(row)
    return out


def format_sweep(sweeps, metric="accuracy"):
    """The paper's table: prune %, sparsity, then `metric` per model.

    `sweeps` is `{name: rows of prune_sweep}`, or one list of rows (then
    every value the sweep measured is a column).

    Example:
    >>> print(format_sweep({"plain": plain_rows, "targeted": td_rows}))
    """
    if isinstance(sweeps, dict):
        wide = compare_sweeps(sweeps, metric)
        labels = {}
        for name in sweeps:
            labels[f"sparsity_{name}"] = f"sp. {name}"
            labels[f"{metric}_{name}"] = name
    else:
        wide = [
            {"prune_fraction": r["fraction"]}
            | {k: v for k, v in r.items() if k != "fraction"}
            for r in sweeps
        ]
        labels = {}
    columns = [c for c in wide[0] if c != "prune_fraction"]
    heads = ["prune %"] + [labels.get(c, c) for c in columns]
    cells = [
        [f"{row['prune_fraction'] * 100:>6.0f}%"]
        + [_cell(row.get(c)) for c in columns]
        for row in wide
    ]
    widths = [
        max([7, len(h)] + [len(line[i]) for line in cells])
        for i, h in enumerate(heads)
    ]
    lines = [
        "  ".join(f"{h:>{w}}" for h, w in zip(heads, widths)),
        "  ".join("-" * w for w in widths),
    ]
    for line in cells:
        lines.append("  ".join(f"{c:>{w}}" for c, w in zip(line, widths)))
    return "\n".join(lines)


def _cell(value):
    """Floats with 4 decimals, ints whole, None as "-", booleans as
    yes/no."""
    if value is None:
        return "-"
    if isinstance(value, (bool, np.bool_)):
        return "yes" if value else "no"
    if isinstance(value, (int, np.integer)):
        return str(value)
    return f"{value:.4f}"


@contextlib.contextmanager
def _atomic(path, mode="w", **kwargs):
    """Opens a temporary file next to `path`; renames it over `path` only
    when the block succeeds."""
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(dir=folder, suffix=".part")
    try:
        # mkstemp makes 0600 files; give the file the mode open() would.
        os.chmod(tmp, 0o666 & ~current_umask())
        with os.fdopen(fd, mode, **kwargs) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def current_umask():
    """The process umask, read without changing it where the OS allows
    (Linux: /proc/self/status); elsewhere set and restored at once."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except OSError:
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def write_csv(rows, path):
    """Writes rows of dicts (columns from the first row) to a CSV file,
    floats with 6 decimals, atomically."""
    rows = list(rows)
    columns = list(rows[0]) if rows else []
    with _atomic(path, newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns)
        writer.writeheader()
        for row in rows:
            writer.writerow(
                {
                    k: f"{v:.6f}" if isinstance(v, float) else v
                    for k, v in row.items()
                }
            )
    return path


def plot_sweeps(
    sweeps,
    path,
    metric="accuracy",
    title=None,
    xlabel="pruned (%)",
):
    """Plots `metric` against the prune fraction, one curve per model, to a
    PNG file (atomically). Needs matplotlib (`pip install keras-tdrop[plots]`).

    Example:
    >>> plot_sweeps({"plain": plain_rows, "targeted": td_rows}, "sweep.png")
    """
    _check_sweeps(sweeps)
    require("matplotlib", "plots", "plot_sweeps")
    # Figure + Agg canvas rather than pyplot: no global backend is changed.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6, 4))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    markers = "osD^v<>pP*X"
    for i, (name, rows) in enumerate(sweeps.items()):
        ax.plot(
            [row["fraction"] * 100 for row in rows],
            [row[metric] for row in rows],
            f"{markers[i % len(markers)]}-",
            label=name,
        )
    ax.set_xlabel(xlabel)
    ax.set_ylabel(f"test {metric}" if metric == "accuracy" else metric)
    if title:
        ax.set_title(title)
    if "acc" in metric:
        ax.set_ylim(0.0, 1.0)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    with _atomic(path, "wb") as f:
        fig.savefig(f, format="png", dpi=100)
    return path
