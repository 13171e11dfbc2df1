"""`keras-tdrop compare RUN ...`: the paper-style table of several runs.

Rows are prune fractions, columns runs, one table for weight and one for
unit pruning (test accuracy, %), as in the paper's Table 2; the curves are
plotted together.
"""

import csv
import json
import os

SWEEP_COLUMNS = ("fraction", "sparsity", "loss", "accuracy")
TARGETINGS = ("weight", "unit")


def write_sweep_csv(rows, path):
    """Writes the rows of `prune_sweep` (through a temporary file)."""
    tmp = f"{path}.tmp"
    with open(tmp, "w", newline="") as f:
        writer = csv.DictWriter(
            f, fieldnames=SWEEP_COLUMNS, extrasaction="ignore"
        )
        writer.writeheader()
        for row in rows:
            writer.writerow({k: f"{row[k]:.6f}" for k in SWEEP_COLUMNS})
    os.replace(tmp, path)


def read_sweep_csv(path):
    """The rows written by `write_sweep_csv`, as floats."""
    with open(path, newline="") as f:
        return [
            {k: float(v) for k, v in row.items()} for row in csv.DictReader(f)
        ]


def load_run(run_dir):
    """`(label, {"weight": rows, "unit": rows})` of a finished run folder.

    The label is the experiment's name (from config.json), or the folder's
    name when two runs share one.
    """
    sweeps = {}
    for targeting in TARGETINGS:
        path = os.path.join(run_dir, f"sweep_{targeting}.csv")
        if os.path.exists(path):
            sweeps[targeting] = read_sweep_csv(path)
    if not sweeps:
        raise ValueError(
            f"`{run_dir}` holds no sweep_weight.csv or sweep_unit.csv (is the "
            f"run finished?). Received: run_dir={run_dir!r}"
        )
    label = os.path.basename(os.path.normpath(run_dir))
    config = _config(run_dir)
    return config.get("experiment", label), sweeps


def _config(run_dir, name="config.json"):
    """The JSON file `name` of a run folder as a dict, {} if it is absent."""
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

    def value(label, targeting, fraction):
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
        found = [r[metric] for r in rows if round(r["fraction"], 6) == fraction]
        return found[0] if found else None

    groups = [("random-prune", list(random))]
    if matched:
        groups.append(("ramping TD (gamma = p)", list(matched)))
    groups += [
        (label, [label])
        for label in runs
        if label not in random and label not in matched
    ]
    width = max(len(name) for name, _ in groups)
    head = f"{'':<{width}}  " + "  ".join(
        f"{t} {f * 100:>3.0f}%" for t, f in columns
    )
    lines = [f"random pruning vs post hoc pruning, test {metric} (%)", head]
    lines.append("-" * len(head))
    for name, labels in groups:
        cells = []
        for targeting, fraction in columns:
            found = [value(label, targeting, fraction) for label in labels]
            found = [v for v in found if v is not None]
            text = f"{found[0] * 100:.2f}" if found else "-"
            cells.append(f"{text:>{len(targeting) + 5}}")
        lines.append(f"{name:<{width}}  " + "  ".join(cells))
    return "\n".join(lines)


def pruned_as_saved(runs, targeting="weight"):
    """`{label: sparsity}` of the runs whose 0% row is already sparse: runs
    saved with their targeted set pruned (`prune_at_inference`)."""
    found = {}
    for label, sweeps in runs.items():
        zero = [r for r in sweeps.get(targeting, []) if r["fraction"] == 0.0]
        if zero and zero[0]["sparsity"] > 0.0:
            found[label] = zero[0]["sparsity"]
    return found


def _unique_labels(labels, dirs):
    return [
        label
        if labels.count(label) == 1
        else os.path.basename(os.path.normpath(d))
        for label, d in zip(labels, dirs)
    ]


def format_table(runs, targeting="weight", metric="accuracy", dense=None):
    """A fixed-width table: rows prune %, columns runs, `metric` in %.

    `runs` maps a label to `{"weight": rows, "unit": rows}`; a run without
    a fraction shows `-` there. Runs saved already sparse (ramped runs,
    saved with their targeted set pruned) get a note under the table, with
    their dense weights' accuracy when `dense` (`{label: accuracy}`) has it.
    """
    labels = [label for label, s in runs.items() if targeting in s]
    fractions = sorted(
        {
            round(r["fraction"], 6)
            for s in runs.values()
            for r in s.get(targeting, [])
        }
    )
    widths = [max(8, len(label)) for label in labels]
    head = f"{'prune %':>7}  " + "  ".join(
        f"{label:>{w}}" for label, w in zip(labels, widths)
    )
    lines = [
        f"{targeting} pruning, test {metric} (%)",
        head,
        "-" * len(head),
    ]
    for fraction in fractions:
        cells = []
        for label, w in zip(labels, widths):
            found = [
                r[metric]
                for r in runs[label][targeting]
                if round(r["fraction"], 6) == fraction
            ]
            cells.append(
                f"{found[0] * 100:>{w}.2f}" if found else f"{'-':>{w}}"
            )
        lines.append(f"{fraction * 100:>6.0f}%  " + "  ".join(cells))
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


def plot_sweeps(runs, path, title=None, metric="accuracy"):
    """Plots every run's weight and unit sweeps side by side into `path`."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(11, 4))
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, 2)
    for ax, targeting in zip(axes, TARGETINGS):
        for label, sweeps in runs.items():
            rows = sweeps.get(targeting)
            if rows:
                ax.plot(
                    [r["fraction"] * 100 for r in rows],
                    [r[metric] for r in rows],
                    "o-",
                    label=label,
                )
        ax.set_xlabel(
            "pruned weights per column (%)"
            if targeting == "weight"
            else "pruned units per layer (%)"
        )
        ax.set_ylabel(f"test {metric}")
        ax.set_title(f"{targeting} pruning")
        ax.set_ylim(0.0, 1.0)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    tmp = f"{path}.tmp.png"
    fig.savefig(tmp, dpi=100)
    os.replace(tmp, path)


def compare(run_dirs, out=None, fractions=None, verbose=1):
    """Prints the weight and unit tables of `run_dirs` and plots them.

    Args:
        run_dirs: finished run folders (see `train`).
        out: optional folder for `compare.png`, `compare_weight.csv` and
            `compare_unit.csv`.
        fractions: optional fractions to show (default: all swept).
        verbose: 0 prints nothing.

    Returns:
        `{"weight": table text, "unit": table text}`, and
        `"random_prune"` (Table 7, `format_random_prune_table`) when some
        runs are random-prune runs.

    Example:
    >>> compare(["runs/none", "runs/ramping_weight"], out="runs/compare")
    """
    if isinstance(run_dirs, str) or not run_dirs:
        raise ValueError(
            "`run_dirs` must be a non-empty list of run folders. "
            f"Received: run_dirs={run_dirs!r}"
        )
    loaded = [load_run(d) for d in run_dirs]
    labels = _unique_labels([label for label, _ in loaded], run_dirs)
    runs = {}
    for label, (_, sweeps) in zip(labels, loaded):
        if fractions is not None:
            keep = {round(f, 6) for f in fractions}
            sweeps = {
                t: [r for r in rows if round(r["fraction"], 6) in keep]
                for t, rows in sweeps.items()
            }
        runs[label] = sweeps
    dense = {}
    for label, run_dir in zip(labels, run_dirs):
        saved = _config(run_dir, "dense.json")
        if saved:
            dense[label] = saved["dense_test_accuracy"]
    tables = {}
    for targeting in TARGETINGS:
        if any(targeting in s for s in runs.values()):
            tables[targeting] = format_table(runs, targeting, dense=dense)
            if verbose:
                print(tables[targeting] + "\n")
    configs = {label: _config(d) for label, d in zip(labels, run_dirs)}
    random_table = format_random_prune_table(runs, configs)
    if random_table is not None:
        tables["random_prune"] = random_table
        if verbose:
            print(random_table + "\n")
    if out is not None:
        os.makedirs(out, exist_ok=True)
        plot_sweeps(runs, os.path.join(out, "compare.png"))
        for targeting in tables:
            _write_wide_csv(
                runs, targeting, os.path.join(out, f"compare_{targeting}.csv")
            )
        if verbose:
            print(f"Wrote {out}/compare.png and compare_*.csv.")
    return tables


def _write_wide_csv(runs, targeting, path):
    labels = [label for label, s in runs.items() if targeting in s]
    fractions = sorted(
        {
            round(r["fraction"], 6)
            for label in labels
            for r in runs[label][targeting]
        }
    )
    tmp = f"{path}.tmp"
    with open(tmp, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["fraction", *labels])
        for fraction in fractions:
            row = [f"{fraction:.6f}"]
            for label in labels:
                found = [
                    r["accuracy"]
                    for r in runs[label][targeting]
                    if round(r["fraction"], 6) == fraction
                ]
                row.append(f"{found[0]:.6f}" if found else "")
            writer.writerow(row)
    os.replace(tmp, path)
