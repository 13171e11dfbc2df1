"""Runs of one experiment over several seeds: means, spreads, overlaps.

As ShrinkBench (Blalock et al., 2020) asks of a pruning comparison, every
cell is a mean and a standard deviation over seeds, and two methods are
said to differ at a fraction only when their `[mean - sd, mean + sd]`
ranges do not overlap.
"""

import json
import os
import re

import numpy as np

from keras_tdrop.layers.targeted_rates import with_saved_semantics

__all__ = [
    "METRICS",
    "aggregate",
    "band_verdict",
    "cell",
    "group_runs",
    "mean_sd",
    "overlaps",
    "run_seed",
    "spread",
    "verdict",
]

METRICS = ("accuracy", "sparsity", "loss", "compression", "speedup")
# Settings that do not make two runs different experiments.
NOT_SETTINGS = ("seed", "fractions", "keras_tdrop", "keras", "backend")


def run_seed(run_dir, config):
    """The run's seed: `config["seed"]`, else the `-s<seed>` ending of the
    folder's name, else None."""
    if isinstance(config.get("seed"), int):
        return config["seed"]
    match = re.search(r"-s(\d+)$", os.path.basename(os.path.normpath(run_dir)))
    return int(match.group(1)) if match else None


def group_runs(runs):
    """Groups loaded runs by experiment and settings.

    Args:
        runs: a list of `(run_dir, experiment, sweeps, config)`.

    Returns:
        A list of `(experiment, members)`, in the order first seen, where
        `members` are the runs of one experiment with the same settings
        and distinct seeds. Runs without a known seed, or whose seed is
        already in their group, stay on their own.
    """
    groups = []
    keyed = {}
    for run in runs:
        run_dir, experiment, _, config = run
        seed = run_seed(run_dir, config)
        settings = {k: v for k, v in config.items() if k not in NOT_SETTINGS}
        if settings.get("method") == "targeted":
            # A run saved before `noise`/`rescale` were settings ran with
            # the values a config without them loads with: the same run as
            # one that names them.
            settings["params"] = with_saved_semantics(settings["params"])
        key = (experiment, json.dumps(settings, sort_keys=True, default=str))
        group = keyed.get(key)
        seeds = [run_seed(m[0], m[3]) for m in group[1]] if group else []
        if seed is None or group is None or seed in seeds:
            group = (experiment, [run])
            groups.append(group)
            if seed is not None and key not in keyed:
                keyed[key] = group
        else:
            group[1].append(run)
    return groups


def mean_sd(values):
    """`(mean, sd, n)` of the values that are not None; `sd` is the sample
    standard deviation (ddof 1), None for fewer than 2 values."""
    values = [float(v) for v in values if v is not None]
    if not values:
        return None, None, 0
    sd = float(np.std(values, ddof=1)) if len(values) > 1 else None
    return float(np.mean(values)), sd, len(values)


def band_verdict(values, bound, at_least):
    """`(text, word)` for the claim `mean ± sd >= bound` (`at_least`) or
    `<= bound` over per-seed `values`: MET when the whole band (mean ± sd)
    is on the claim's side of the bound, NOT MET when it is all on the
    other side, UNDECIDED when it straddles it. One seed's band is the
    value alone, and the text says "(1 seed)"."""
    mean, sd, n = mean_sd(values)
    sd = sd or 0.0
    low, high = mean - sd, mean + sd
    if at_least:
        word = "MET" if low >= bound else "NOT MET" if high < bound else None
    else:
        word = "MET" if high <= bound else "NOT MET" if low > bound else None
    word = word or "UNDECIDED"
    seeds = " (1 seed)" if n == 1 else f" ({n} seeds)"
    return f"{mean:6.2f} ± {sd:4.2f}{seeds}", word


def aggregate(sweeps_by_seed):
    """Mean rows of several runs' sweeps of one targeting.

    Args:
        sweeps_by_seed: a list of sweep row lists (one per seed).

    Returns:
        One row per fraction: `fraction`, `n` (the seeds that swept it),
        and for each of `METRICS` the mean under its name and the sample
        standard deviation as `<metric>_sd` (None from one seed, and both
        None where no run has the column).
    """
    fractions = sorted(
        {round(r["fraction"], 6) for rows in sweeps_by_seed for r in rows}
    )
    out = []
    for fraction in fractions:
        at = [
            r
            for rows in sweeps_by_seed
            for r in rows
            if round(r["fraction"], 6) == fraction
        ]
        row = {"fraction": fraction, "n": len(at)}
        for metric in METRICS:
            mean, sd, _ = mean_sd(r.get(metric) for r in at)
            row[metric], row[f"{metric}_sd"] = mean, sd
        out.append(row)
    return out


def cell(row, metric="accuracy", scale=100.0):
    """`mean ± sd (n)`; `mean (1 seed)` from one seed; `-` if missing."""
    if row is None or row.get(metric) is None:
        return "-"
    mean = row[metric] * scale
    sd = row.get(f"{metric}_sd")
    if row.get("n", 1) < 2 or sd is None:
        return f"{mean:.2f} (1 seed)"
    return f"{mean:.2f} ± {sd * scale:.2f} ({row['n']})"


def spread(row, metric="accuracy"):
    """`(mean - sd, mean + sd)`, or None where there is no spread."""
    if row is None or row.get(f"{metric}_sd") is None:
        return None
    return row[metric] - row[f"{metric}_sd"], row[metric] + row[f"{metric}_sd"]


def verdict(a, b, metric="accuracy"):
    """ "differ" when the `[mean - sd, mean + sd]` ranges of rows `a` and
    `b` do not overlap, "overlap" when they do, "1 seed" (not judged)
    when either has no spread."""
    ra, rb = spread(a, metric), spread(b, metric)
    if ra is None or rb is None:
        return "1 seed"
    return "differ" if ra[1] < rb[0] or rb[1] < ra[0] else "overlap"


def overlaps(runs, targeting, metric="accuracy"):
    """Every pair of runs at every fraction both swept, with its verdict.

    Args:
        runs: `{label: {targeting: rows of aggregate}}`.

    Returns:
        Rows: `fraction`, `a`, `b`, `a_mean`, `a_sd`, `b_mean`, `b_sd`,
        `verdict` (see `verdict`).
    """
    labels = [label for label, s in runs.items() if targeting in s]
    out = []
    for i, a in enumerate(labels):
        for b in labels[i + 1 :]:
            rows_b = {round(r["fraction"], 6): r for r in runs[b][targeting]}
            for row_a in runs[a][targeting]:
                row_b = rows_b.get(round(row_a["fraction"], 6))
                if row_b is None:
                    continue
                out.append(
                    {
                        "fraction": row_a["fraction"],
                        "a": a,
                        "b": b,
                        "a_mean": row_a[metric],
                        "a_sd": row_a.get(f"{metric}_sd"),
                        "b_mean": row_b[metric],
                        "b_sd": row_b.get(f"{metric}_sd"),
                        "verdict": verdict(row_a, row_b, metric),
                    }
                )
    return sorted(out, key=lambda r: r["fraction"])
