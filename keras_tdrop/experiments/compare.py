"""`keras-tdrop compare RUN ...`: the paper-style tables of several runs.

Runs of one experiment with the same settings and different seeds (the
seed is read from config.json, or from a folder named `<experiment>-s<seed>`)
are one column: every cell is the mean ± standard deviation over the
seeds with their count (`1 seed` where there is one), next to the
compression ratio (parameters / non-zero parameters) and the theoretical
FLOP speed-up, one table for weight and one for unit pruning. Below each,
every pair of runs at every fraction is marked `differ` where their
[mean - sd, mean + sd] accuracy ranges do not overlap, else `overlap`.
The curves are plotted with ± sd bands. With `recalibrated`, the sweeps
are those with the BatchNorm statistics recalibrated at every fraction
(`sweep_{weight,unit}_recalibrated.csv`, written by `train` for models
with BatchNormalization), so one results folder's tables can be shown
with and without recalibration.
"""

import os

from keras_tdrop.atomic_write import atomic_write
from keras_tdrop.experiments import seeds as seeds_lib
from keras_tdrop.experiments.compare_tables import format_overlap
from keras_tdrop.experiments.compare_tables import format_random_prune_table
from keras_tdrop.experiments.compare_tables import format_runs
from keras_tdrop.experiments.compare_tables import pruned_as_saved
from keras_tdrop.experiments.compare_tables import row_at
from keras_tdrop.experiments.compare_tables import swept_fractions
from keras_tdrop.experiments.run_folders import SIZE_COLUMNS
from keras_tdrop.experiments.run_folders import SWEEP_COLUMNS
from keras_tdrop.experiments.run_folders import TARGETINGS
from keras_tdrop.experiments.run_folders import find_runs
from keras_tdrop.experiments.run_folders import load_run
from keras_tdrop.experiments.run_folders import read_run_json
from keras_tdrop.experiments.run_folders import read_sweep_csv
from keras_tdrop.experiments.run_folders import sweep_files
from keras_tdrop.experiments.run_folders import write_sweep_csv
from keras_tdrop.pruning.report import plot_sweeps
from keras_tdrop.pruning.report import write_csv

__all__ = [
    "RECALIBRATED_NOTE",
    "SIZE_COLUMNS",
    "SWEEP_COLUMNS",
    "TARGETINGS",
    "compare",
    "find_runs",
    "format_overlap",
    "format_random_prune_table",
    "format_runs",
    "load_run",
    "plot_runs",
    "pruned_as_saved",
    "read_sweep_csv",
    "sweep_files",
    "write_sweep_csv",
]

RECALIBRATED_NOTE = "BatchNorm statistics recalibrated at every fraction"


def _unique_labels(labels, dirs):
    return [
        label
        if labels.count(label) == 1
        else os.path.basename(os.path.normpath(d))
        for label, d in zip(labels, dirs)
    ]


def plot_runs(runs, path, title=None, metric="accuracy"):
    """Plots every run's weight and unit sweeps side by side into `path`
    (`plot_sweeps`): the mean curve, and a band of ± sd where the rows
    have `<metric>_sd` (rows of `seeds.aggregate`), labelled with their
    count of seeds."""
    panels = {targeting: {} for targeting in TARGETINGS}
    for label, sweeps in runs.items():
        for targeting, rows in sweeps.items():
            n = max([r.get("n", 0) for r in rows], default=0)
            seeds = "" if not n else " (1 seed)" if n == 1 else f" ({n} seeds)"
            panels[targeting][label + seeds] = rows
    return plot_sweeps(panels, path, metric=metric, title=title)


def compare(run_dirs, out=None, fractions=None, recalibrated=False, verbose=1):
    """Prints the weight and unit tables of `run_dirs` and plots them.

    Runs of one experiment with the same settings and distinct seeds are
    aggregated (see `seeds.group_runs`); the others are labelled by their
    experiment, or by their folder when two share one.

    Args:
        run_dirs: finished run folders (see `train`; `find_runs` lists the
            run folders of a results folder).
        out: optional folder for `compare.txt` (the printed tables),
            `compare.png`, `compare_{weight,unit}.csv` (the mean accuracy,
            a column per run), `summary_{weight,unit}.csv` (every mean and
            sd) and `overlap_{weight,unit}.csv` (the verdicts).
        fractions: optional fractions to show (default: all swept).
        recalibrated: bool, the sweeps with BatchNorm recalibrated at every
            fraction (`sweep_{weight,unit}_recalibrated.csv`); the tables
            say so and the files in `out` end in `_recalibrated`
            (`compare_recalibrated.txt`, ...).
        verbose: 0 prints nothing.

    Returns:
        `{"weight": table text, "unit": table text}`, `"overlap_weight"`
        and `"overlap_unit"` (`format_overlap`) where two runs share a
        fraction, and `"random_prune"` (Table 7, `format_random_prune_table`)
        when some runs are random-prune runs.

    Example:
    >>> compare(find_runs("docs/results/mnist_mlp"), out="runs/compare")
    """
    if isinstance(run_dirs, str) or not run_dirs:
        raise ValueError(
            "`run_dirs` must be a non-empty list of run folders. "
            f"Received: run_dirs={run_dirs!r}"
        )
    loaded = []
    for run_dir in run_dirs:
        label, sweeps = load_run(run_dir, recalibrated)
        if fractions is not None:
            keep = {round(f, 6) for f in fractions}
            sweeps = {
                t: [r for r in rows if round(r["fraction"], 6) in keep]
                for t, rows in sweeps.items()
            }
        loaded.append((run_dir, label, sweeps, read_run_json(run_dir)))
    groups = seeds_lib.group_runs(loaded)
    labels = _unique_labels(
        [experiment for experiment, _ in groups],
        [members[0][0] for _, members in groups],
    )
    runs, dense, configs = {}, {}, {}
    for label, (_, members) in zip(labels, groups):
        runs[label] = {
            t: seeds_lib.aggregate([m[2][t] for m in members if t in m[2]])
            for t in TARGETINGS
            if any(t in m[2] for m in members)
        }
        configs[label] = members[0][3]
        saved = [read_run_json(m[0], "dense.json") for m in members]
        mean = seeds_lib.mean_sd(s.get("dense_test_accuracy") for s in saved)
        if mean[0] is not None:
            dense[label] = mean[0]
    tables = {}
    for targeting in TARGETINGS:
        if any(targeting in s for s in runs.values()):
            tables[targeting] = format_runs(runs, targeting, dense=dense)
            overlap = format_overlap(runs, targeting)
            if overlap is not None:
                tables[f"overlap_{targeting}"] = overlap
    random_table = format_random_prune_table(runs, configs)
    if random_table is not None:
        tables["random_prune"] = random_table
    text = "\n\n".join(tables.values()) + "\n"
    suffix = ""
    if recalibrated:
        suffix = "_recalibrated"
        text = RECALIBRATED_NOTE + "\n\n" + text
    if verbose:
        print(text)
    if out is not None:
        os.makedirs(out, exist_ok=True)
        with atomic_write(os.path.join(out, f"compare{suffix}.txt")) as f:
            f.write(text)
        plot_runs(
            runs,
            os.path.join(out, f"compare{suffix}.png"),
            title=RECALIBRATED_NOTE if recalibrated else None,
        )
        for targeting in TARGETINGS:
            if targeting in tables:
                _write_csvs(runs, targeting, out, suffix)
        if verbose:
            print(
                f"Wrote {out}/compare{suffix}.txt, compare{suffix}.png and "
                "the CSV files."
            )
    return tables


def _write_csvs(runs, targeting, out, suffix=""):
    labels, fractions = swept_fractions(runs, targeting)
    wide, summary = [], []
    for fraction in fractions:
        line = {"fraction": fraction}
        for label in labels:
            row = row_at(runs[label][targeting], fraction)
            line[label] = None if row is None else row["accuracy"]
            if row is not None:
                summary.append({"run": label} | row)
        wide.append(line)
    write_csv(wide, os.path.join(out, f"compare_{targeting}{suffix}.csv"))
    write_csv(summary, os.path.join(out, f"summary_{targeting}{suffix}.csv"))
    pairs = seeds_lib.overlaps(runs, targeting)
    if pairs:
        write_csv(pairs, os.path.join(out, f"overlap_{targeting}{suffix}.csv"))
