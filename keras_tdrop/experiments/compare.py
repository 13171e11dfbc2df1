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
from keras_tdrop.pruning.report import format_rows
from keras_tdrop.pruning.report import plot_sweeps
from keras_tdrop.pruning.report import write_csv

__all__ = [
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

SWEEP_COLUMNS = ("fraction", "sparsity", "loss", "accuracy")
# Written too when the sweep rows have them (prune_sweep's rows do).
SIZE_COLUMNS = ("parameters", "nonzero", "compression", "flops", "speedup")
TARGETINGS = ("weight", "unit")
RECALIBRATED_NOTE = "BatchNorm statistics recalibrated at every fraction"


def write_sweep_csv(rows, path):
    """Writes the rows of `prune_sweep` as a run folder keeps them: the
    columns `read_sweep_csv` reads (see `write_csv`)."""
    rows = list(rows)
    extra = [c for c in SIZE_COLUMNS if rows and c in rows[0]]
    write_csv(rows, path, columns=SWEEP_COLUMNS + tuple(extra))


def read_sweep_csv(path):
    """The rows written by `write_sweep_csv`, as floats (None if empty)."""
    import csv

    with open(path, newline="") as f:
        return [
            {k: float(v) if v != "" else None for k, v in row.items()}
            for row in csv.DictReader(f)
        ]


def sweep_files(recalibrated=False):
    """`{targeting: file name}` of a run folder's sweeps."""
    suffix = "_recalibrated" if recalibrated else ""
    return {t: f"sweep_{t}{suffix}.csv" for t in TARGETINGS}


def load_run(run_dir, recalibrated=False):
    """`(label, {"weight": rows, "unit": rows})` of a finished run folder.

    The label is the experiment's name (from config.json), else the
    folder's name. With `recalibrated`, the sweeps with BatchNorm
    recalibrated (`sweep_{weight,unit}_recalibrated.csv`).
    """
    files = sweep_files(recalibrated)
    sweeps = {}
    for targeting, name in files.items():
        path = os.path.join(run_dir, name)
        if os.path.exists(path):
            sweeps[targeting] = read_sweep_csv(path)
    if not sweeps:
        why = (
            "a model without BatchNorm, or swept before recalibration: run "
            "`keras-tdrop train` on it again"
            if recalibrated
            else "is the run finished?"
        )
        raise ValueError(
            f"`{run_dir}` holds no {' or '.join(files.values())} ({why}). "
            f"Received: run_dir={run_dir!r}"
        )
    label = os.path.basename(os.path.normpath(run_dir))
    config = _config(run_dir)
    return config.get("experiment", label), sweeps


def find_runs(folder, recalibrated=False):
    """The run folders directly under `folder` (those with a sweep CSV;
    with `recalibrated`, a recalibrated one), sorted by name."""
    if not os.path.isdir(folder):
        raise ValueError(
            f"`results` must be a folder of run folders. Received: "
            f"results={folder!r}"
        )
    return [
        os.path.join(folder, name)
        for name in sorted(os.listdir(folder))
        if any(
            os.path.exists(os.path.join(folder, name, file))
            for file in sweep_files(recalibrated).values()
        )
    ]


def _config(run_dir, name="config.json"):
    """The JSON file `name` of a run folder as a dict, {} if it is absent."""
    import json

    path = os.path.join(run_dir, name)
    if not os.path.exists(path):
        return {}
    with open(path) as f:
        return json.load(f)


def _ramped_to(config):
    """`(targeting, gamma)` of a ramped targeted-dropout run, else None."""
    params = config.get("params", {})
    if (
        config.get("method") != "targeted"
        or not config.get("ramp")
        or "target_rate" not in params
        or params.get("keep_per_column") is not None
    ):
        return None
    return params.get("targeting", "weight"), round(params["target_rate"], 6)


def _row_at(rows, fraction):
    found = [r for r in rows if round(r["fraction"], 6) == fraction]
    return found[0] if found else None


def format_random_prune_table(runs, configs, metric="accuracy"):
    """Table 7: random pruning before training vs post hoc pruning.

    Columns are the `(targeting, fraction p)` of the random-prune runs
    (method `random_prune`); None if there is none. Rows:

    - `random-prune`: each random-prune run's accuracy as trained (already
      pruned at its p), in its own column.
    - `ramping TD (gamma = p)`: where ramped targeted-dropout runs were
      given whose final gamma is a column's p (same targeting), each one's
      accuracy pruned at p, in that column: the paper's comparison, one
      ramped run per prune fraction.
    - every other run: its accuracy pruned at p post hoc (same targeting).

    Cells are `mean ± sd (seeds)`, as in `format_runs`.
    """
    random = {
        label: configs[label]["params"]
        for label in runs
        if configs.get(label, {}).get("method") == "random_prune"
    }
    if not random:
        return None
    columns = sorted(
        {(p["targeting"], round(p["fraction"], 6)) for p in random.values()}
    )
    ramped = {
        label: _ramped_to(configs.get(label, {}))
        for label in runs
        if label not in random
    }
    matched = {
        label: key for label, key in ramped.items() if key in set(columns)
    }

    def row(label, targeting, fraction):
        rows = runs[label].get(targeting, [])
        if label in random:
            params = random[label]
            if (params["targeting"], round(params["fraction"], 6)) != (
                targeting,
                fraction,
            ):
                return None
            fraction = 0.0
        elif label in matched and matched[label] != (targeting, fraction):
            return None
        return _row_at(rows, fraction)

    groups = [("random-prune", list(random))]
    if matched:
        groups.append(("ramping TD (gamma = p)", list(matched)))
    groups += [
        (label, [label])
        for label in runs
        if label not in random and label not in matched
    ]
    heads = [f"{t} {f * 100:.0f}%" for t, f in columns]
    table = []
    for name, labels in groups:
        line = {"run": name}
        for head, (targeting, fraction) in zip(heads, columns):
            found = [row(label, targeting, fraction) for label in labels]
            found = [r for r in found if r is not None]
            line[head] = seeds_lib.cell(found[0] if found else None, metric)
        table.append(line)
    title = f"random pruning vs post hoc pruning, test {metric} (%)"
    return title + "\n" + format_rows(table)


def pruned_as_saved(runs, targeting="weight"):
    """`{label: sparsity}` of the runs whose 0% row is already sparse: runs
    saved with their targeted set pruned (`prune_at_inference`)."""
    found = {}
    for label, sweeps in runs.items():
        zero = _row_at(sweeps.get(targeting, []), 0.0)
        if zero and zero["sparsity"] > 0.0:
            found[label] = zero["sparsity"]
    return found


def _unique_labels(labels, dirs):
    return [
        label
        if labels.count(label) == 1
        else os.path.basename(os.path.normpath(d))
        for label, d in zip(labels, dirs)
    ]


def format_runs(runs, targeting="weight", metric="accuracy", dense=None):
    """A fixed-width table: a row per prune fraction and run.

    `runs` maps a label to `{"weight": rows, "unit": rows}` (rows of
    `seeds.aggregate`). Columns: `prune %`, `run`, `metric` in % as
    `mean ± sd (seeds)` (`mean (1 seed)` for one), `compression`
    (parameters / non-zero parameters) and `speedup` (theoretical, FLOPs;
    1.00 for masked weights), as `mean ± sd`. Runs saved already sparse
    (ramped runs, saved with their targeted set pruned) get a note under
    the table, with their dense weights' accuracy when `dense`
    (`{label: accuracy}`) has it.
    """
    labels = [label for label, s in runs.items() if targeting in s]
    fractions = sorted(
        {
            round(r["fraction"], 6)
            for label in labels
            for r in runs[label][targeting]
        }
    )
    table = []
    for fraction in fractions:
        for label in labels:
            row = _row_at(runs[label][targeting], fraction)
            if row is None:
                continue
            table.append(
                {
                    "prune %": f"{fraction * 100:.0f}%",
                    "run": label,
                    f"{metric} (%)": seeds_lib.cell(row, metric),
                    "compression": _size_cell(row, "compression"),
                    "speedup": _size_cell(row, "speedup"),
                }
            )
    lines = [
        f"{targeting} pruning, test {metric} (%), mean ± sd (seeds)",
        format_rows(table),
    ]
    for label, sparsity in pruned_as_saved(runs, targeting).items():
        note = (
            f"; {dense[label] * 100:.2f} with the dense weights"
            if dense and label in dense
            else ""
        )
        lines.append(
            f"({label}: saved already pruned, as it is evaluated: "
            f"{sparsity:.2%} sparse at 0%{note})"
        )
    return "\n".join(lines)


def _size_cell(row, metric):
    if row.get(metric) is None:
        return "-"
    sd = row.get(f"{metric}_sd")
    return f"{row[metric]:.2f}" + ("" if sd is None else f" ± {sd:.2f}")


def format_overlap(runs, targeting="weight", metric="accuracy"):
    """Every pair of runs at every fraction: `differ` where their
    [mean - sd, mean + sd] ranges of `metric` do not overlap, `overlap`
    where they do, `1 seed` (not judged) where one has a single seed."""
    rows = seeds_lib.overlaps(runs, targeting, metric)
    if not rows:
        return None

    def span(mean, sd):
        if sd is None:
            return f"{mean * 100:.2f} (1 seed)"
        return f"{(mean - sd) * 100:.2f}-{(mean + sd) * 100:.2f}"

    table = [
        {
            "prune %": f"{r['fraction'] * 100:.0f}%",
            "pair": f"{r['a']} vs {r['b']}",
            "ranges (%)": f"{span(r['a_mean'], r['a_sd'])} vs "
            f"{span(r['b_mean'], r['b_sd'])}",
            "verdict": r["verdict"],
        }
        for r in rows
    ]
    title = f"{targeting} pruning, {metric} ranges [mean - sd, mean + sd]"
    return title + "\n" + format_rows(table)


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
        loaded.append((run_dir, label, sweeps, _config(run_dir)))
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
        saved = [_config(m[0], "dense.json") for m in members]
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
    labels = [label for label, s in runs.items() if targeting in s]
    fractions = sorted(
        {
            round(r["fraction"], 6)
            for label in labels
            for r in runs[label][targeting]
        }
    )
    wide, summary = [], []
    for fraction in fractions:
        line = {"fraction": fraction}
        for label in labels:
            row = _row_at(runs[label][targeting], fraction)
            line[label] = None if row is None else row["accuracy"]
            if row is not None:
                summary.append({"run": label} | row)
        wide.append(line)
    write_csv(wide, os.path.join(out, f"compare_{targeting}{suffix}.csv"))
    write_csv(summary, os.path.join(out, f"summary_{targeting}{suffix}.csv"))
    pairs = seeds_lib.overlaps(runs, targeting)
    if pairs:
        write_csv(pairs, os.path.join(out, f"overlap_{targeting}{suffix}.csv"))
