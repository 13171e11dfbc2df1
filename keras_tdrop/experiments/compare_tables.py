"""The paper-style tables of compared runs.

`format_runs` (a row per prune fraction and run, mean ± sd over the
seeds, compression and speed-up), `format_overlap` (the verdict on every
pair of runs at every fraction) and `format_random_prune_table` (Table 7),
on runs aggregated by `seeds.aggregate`.
"""

from keras_tdrop.experiments import seeds as seeds_lib
from keras_tdrop.pruning.report import format_rows

__all__ = [
    "format_overlap",
    "format_random_prune_table",
    "format_runs",
    "pruned_as_saved",
    "row_at",
    "swept_fractions",
]


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


def swept_fractions(runs, targeting):
    """`(labels, fractions)`: the runs swept with `targeting`, and every
    fraction any of them was swept at, sorted."""
    labels = [label for label, s in runs.items() if targeting in s]
    fractions = sorted(
        {
            round(r["fraction"], 6)
            for label in labels
            for r in runs[label][targeting]
        }
    )
    return labels, fractions


def row_at(rows, fraction):
    """The row of `rows` at `fraction` (rounded to 6 digits), or None."""
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
        return row_at(rows, fraction)

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
        zero = row_at(sweeps.get(targeting, []), 0.0)
        if zero and zero["sparsity"] > 0.0:
            found[label] = zero["sparsity"]
    return found


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
    labels, fractions = swept_fractions(runs, targeting)
    table = []
    for fraction in fractions:
        for label in labels:
            row = row_at(runs[label][targeting], fraction)
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
