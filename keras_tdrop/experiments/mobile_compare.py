"""The table and plot of `keras-tdrop mobile`'s methods: every run folder's
rows, averaged per method and prune fraction (mean ± sd over seeds)."""

import glob
import json
import os

import numpy as np

from keras_tdrop.atomic_write import atomic_write
from keras_tdrop.experiments._plots import can_plot
from keras_tdrop.pruning.plots import figure
from keras_tdrop.pruning.plots import save_png
from keras_tdrop.pruning.report import write_csv
from keras_tdrop.pruning.tables import format_rows

__all__ = [
    "METRICS",
    "TABLE_COLUMNS",
    "compare_mobile",
    "load_rows",
    "summarize",
]

TABLE_COLUMNS = (
    "method",
    "fraction",
    "seeds",
    "macs",
    "latency_ms",
    "accuracy",
    "accuracy_sd",
    "as_trained",
    "as_trained_sd",
    "finetune_seconds",
)
METRIC = "accuracy_tflite"
METRICS = ("accuracy_tflite", "val_accuracy")


def load_rows(folder):
    """Every row of every run folder's results in `folder`."""
    rows = []
    pattern = os.path.join(folder, "*", "results*.json")
    for path in sorted(glob.glob(pattern)):
        with open(path) as f:
            rows.extend(json.load(f)["rows"])
    return rows


def _band(values):
    values = [v for v in values if v is not None]
    if not values:
        return None, None
    sd = float(np.std(values, ddof=1)) if len(values) > 1 else None
    return float(np.mean(values)), sd


def summarize(rows, metric=METRIC):
    """One row per (method, fraction): the seeds, median MACs and LiteRT
    latency, `metric`'s mean and sd (None with one seed; by default the
    LiteRT test accuracy, `"val_accuracy"` for the validation split), and
    at fraction 0 the dense network's as-trained test accuracy (before
    recalibrating its BatchNorm statistics)."""
    if metric not in METRICS:
        raise ValueError(
            f"`metric` must be one of {METRICS}. Received: metric={metric!r}"
        )
    keys = sorted({(r["method"], r["fraction"]) for r in rows})
    table = []
    for method, fraction in keys:
        same = [
            r
            for r in rows
            if r["method"] == method and r["fraction"] == fraction
        ]
        accuracy, sd = _band([r[metric] for r in same])
        trained, trained_sd = _band([r["accuracy_as_trained"] for r in same])
        seconds = [r["finetune_seconds"] for r in same if r["finetune_seconds"]]
        table.append(
            {
                "method": method,
                "fraction": fraction,
                "seeds": len(same),
                "macs": int(np.median([r["macs"] for r in same])),
                "latency_ms": float(np.median([r["latency_ms"] for r in same])),
                "accuracy": accuracy,
                "accuracy_sd": sd,
                "as_trained": trained,
                "as_trained_sd": trained_sd,
                "finetune_seconds": float(np.mean(seconds))
                if seconds
                else None,
            }
        )
    return table


def compare_mobile(folder, out=None, verbose=1, metric=METRIC):
    """Writes `compare.txt`, `compare.csv` and `compare.png` (accuracy in
    LiteRT against LiteRT batch-1 latency and against MACs, one curve per
    method, sd bars) for the run folders in `folder`, into `out` (default
    `{folder}/compare`); returns the summary rows. `metric="val_accuracy"`
    tabulates the validation split instead (a search's folder)."""
    out = out or os.path.join(folder, "compare")
    rows = load_rows(folder)
    if not rows:
        raise ValueError(
            f"No run results in {folder!r}: run `keras-tdrop mobile` with "
            "--out pointing there first."
        )
    table = summarize(rows, metric)
    os.makedirs(out, exist_ok=True)
    text = format_rows(table, TABLE_COLUMNS, missing="-")
    what = (
        "CIFAR-10 test accuracy of the shrunk network in LiteRT"
        if metric == METRIC
        else "validation-split accuracy (5,000 held-out training images) "
        "of the shrunk network"
    )
    note = (
        f"accuracy: {what}, "
        "BatchNorm recalibrated after pruning, mean and sd over the seeds "
        "(no sd: one seed); as_trained: the dense network before "
        "recalibration; latency: LiteRT batch 1, one thread, median."
    )
    with atomic_write(os.path.join(out, "compare.txt")) as f:
        f.write(text + "\n\n" + note + "\n")
    write_csv(table, os.path.join(out, "compare.csv"), TABLE_COLUMNS)
    if can_plot("compare.png"):
        plot(table, os.path.join(out, "compare.png"))
    if verbose:
        print(text + "\n\n" + note)
    return table


def plot(table, path):
    """Accuracy against latency (left) and MACs (right), per method."""
    fig = figure((11, 4.5), "mobile's comparison plot")
    left, right = fig.subplots(1, 2)
    for method in sorted({r["method"] for r in table}):
        rows = sorted(
            (r for r in table if r["method"] == method),
            key=lambda r: r["macs"],
        )
        y = [r["accuracy"] for r in rows]
        err = [r["accuracy_sd"] or 0.0 for r in rows]
        for ax, key in ((left, "latency_ms"), (right, "macs")):
            ax.errorbar(
                [r[key] for r in rows],
                y,
                yerr=err,
                marker="o",
                capsize=3,
                label=method,
            )
    left.set_xlabel("LiteRT latency, batch 1, 1 thread (ms)")
    right.set_xlabel("MACs")
    for ax in (left, right):
        ax.set_ylabel("test accuracy (LiteRT, shrunk)")
        ax.grid(alpha=0.3)
    left.legend()
    fig.suptitle(
        "MobileNetV2-style CIFAR-10 network, group-pruned at 0/25/50/70% "
        "and shrunk, per method"
    )
    fig.tight_layout()
    return save_png(fig, path)


def main(argv=None):
    """`python -m keras_tdrop.experiments.mobile_compare FOLDER`: rewrites
    `FOLDER/compare` from the committed run folders (`make results`)."""
    import argparse

    parser = argparse.ArgumentParser(description=compare_mobile.__doc__)
    parser.add_argument("folder", help="the folder of the run folders")
    parser.add_argument("--metric", choices=METRICS, default=METRIC)
    args = parser.parse_args(argv)
    compare_mobile(args.folder, metric=args.metric)


if __name__ == "__main__":
    main()
