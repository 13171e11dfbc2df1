"""The Targeted Dropout paper's claims, checked on committed runs.

Reads the run folders of one scale (`docs/results/<scale>/<name>-s<seed>/`,
their sweep CSVs, with and without BatchNorm recalibration) and prints each
claim of issue 15 with the per-seed values behind it and a verdict worded
by the bands (mean ± sd over the seeds):

- weight: at 80% weight pruning, targeted weight dropout (0.66/0.75) loses
  at most 3 points of its own unpruned accuracy, while no regularisation
  loses at least 20;
- unit: unit targeted dropout (0.9/0.75) unpruned is within 5 points of no
  regularisation, and at 50% unit pruning it loses at most 3 points of its
  own unpruned accuracy, while no regularisation loses at least 20.

A verdict is MET when the whole band (mean ± sd) is on the claim's side of
the bound, NOT MET when the whole band is on the other side, UNDECIDED when
the band straddles it; "(1 seed)" marks a single-seed value, whose band is
the value alone.

After the claims it prints the accuracies behind them (unpruned, 50% and
80% pruned, as trained and recalibrated, mean ± sd over the seeds), the
table docs/reproducing.md quotes.

Usage: python docs/results/paper_claims.py docs/results/cifar10_resnet8_cos20
    [--unit-experiment targeted_unit_0.9_0.75_column]
"""

import argparse
import collections
import os
import sys

from keras_tdrop.experiments.run_folders import find_runs
from keras_tdrop.experiments.run_folders import load_run
from keras_tdrop.experiments.seeds import aggregate
from keras_tdrop.experiments.seeds import band_verdict
from keras_tdrop.experiments.seeds import cell
from keras_tdrop.experiments.seeds import mean_sd
from keras_tdrop.pruning.tables import format_rows

NONE = "none"
WEIGHT = "targeted_weight_0.66_0.75"
RAMPING = "ramping_weight"
FRACTIONS = (0.0, 0.5, 0.8)


def _sweeps(folder, recalibrated):
    """`{(experiment, targeting): [sweep rows, one list per seed]}`."""
    found = collections.defaultdict(list)
    for run_dir in find_runs(folder, recalibrated):
        name, sweeps = load_run(run_dir, recalibrated)
        for targeting, rows in sweeps.items():
            found[name, targeting].append(rows)
    return found


def accuracies(folder, recalibrated):
    """`{experiment: {targeting: [{fraction: accuracy}, one per seed]}}`."""
    found = collections.defaultdict(lambda: collections.defaultdict(list))
    for (name, targeting), seeds in _sweeps(folder, recalibrated).items():
        for rows in seeds:
            found[name][targeting].append(
                {round(r["fraction"], 6): 100 * r["accuracy"] for r in rows}
            )
    return found


def verdict(values, bound, at_least):
    """MET / NOT MET / UNDECIDED for `mean ± sd >= bound` (`at_least`) or
    `<= bound` (`seeds.band_verdict`)."""
    return band_verdict(values, bound, at_least)


def loss_at(sweeps, fraction):
    """Per seed: unpruned accuracy minus accuracy at `fraction`."""
    return [s[0.0] - s[fraction] for s in sweeps if fraction in s]


def claims(found, unit_experiment):
    rows = []

    def add(claim, values, bound, at_least):
        if not values:
            rows.append((claim, "no runs", "-"))
            return
        rows.append((claim, *verdict(values, bound, at_least)))

    none = found.get(NONE, {})
    weight = found.get(WEIGHT, {}).get("weight", [])
    unit = found.get(unit_experiment, {}).get("unit", [])
    add(
        f"{WEIGHT}: loss at 80% weight pruning <= 3",
        loss_at(weight, 0.8),
        3.0,
        False,
    )
    add(
        "none: loss at 80% weight pruning >= 20",
        loss_at(none.get("weight", []), 0.8),
        20.0,
        True,
    )
    none_dense = [s[0.0] for s in none.get("unit", [])]
    if none_dense and unit:
        mean = mean_sd(none_dense)[0]
        add(
            f"{unit_experiment}: unpruned, none's mean ({mean:.2f}) minus it"
            " <= 5",
            [mean - s[0.0] for s in unit],
            5.0,
            False,
        )
    else:
        add(f"{unit_experiment}: unpruned within 5 of none", [], 5.0, False)
    add(
        f"{unit_experiment}: loss at 50% unit pruning <= 3",
        loss_at(unit, 0.5),
        3.0,
        False,
    )
    add(
        "none: loss at 50% unit pruning >= 20",
        loss_at(none.get("unit", []), 0.5),
        20.0,
        True,
    )
    return rows


def figures(folder, unit_experiment):
    """The accuracies behind the claims as a text table: each compared
    run at `FRACTIONS` of its own kind of pruning, as trained and with
    BatchNorm recalibrated (`mean ± sd (seeds)`, `-` where not run)."""
    trained, recalibrated = _sweeps(folder, False), _sweeps(folder, True)
    pairs = [(NONE, "weight"), (WEIGHT, "weight"), (RAMPING, "weight")]
    pairs += [(NONE, "unit"), (unit_experiment, "unit")]
    rows = []
    for name, targeting in pairs:
        if not trained.get((name, targeting)):
            continue
        means = [
            {
                round(r["fraction"], 6): r
                for r in aggregate(found[name, targeting])
            }
            for found in (trained, recalibrated)
        ]
        for fraction in FRACTIONS:
            rows.append(
                {
                    "run": name,
                    "pruning": targeting,
                    "prune %": f"{fraction:.0%}",
                    "as trained": cell(means[0].get(fraction)),
                    "recalibrated": cell(means[1].get(fraction)),
                }
            )
    if not rows:
        return "no runs"
    return format_rows(rows)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("results", help="a folder of run folders")
    parser.add_argument(
        "--unit-experiment", default="targeted_unit_0.9_0.75_column"
    )
    args = parser.parse_args(argv)
    if not os.path.isdir(args.results):
        sys.exit(f"results must be a folder. Received: {args.results!r}")
    for recalibrated in (False, True):
        found = accuracies(args.results, recalibrated)
        title = "BatchNorm recalibrated" if recalibrated else "as trained"
        print(f"Paper claims, {args.results} ({title}; points of accuracy)")
        rows = claims(found, args.unit_experiment)
        width = max(len(r[0]) for r in rows)
        for claim, value, word in rows:
            print(f"  {claim:<{width}}  {value:<22}  {word}")
        print()
    print(
        f"Test accuracy (%) behind the claims, {args.results}: mean ± sd "
        "(seeds)"
    )
    print(figures(args.results, args.unit_experiment))


if __name__ == "__main__":
    main()
