"""The mobile payoff issue's claims, checked on committed runs.

Reads the run folders of `keras-tdrop mobile` (`docs/results/cifar10_mobile`
by default: `{method}_s{seed}/results.json`, `narrow_w50_s{seed}`, and
`none_s{seed}/results_finetune.json`) and prints each claim with its
per-seed values (methods paired by seed: same initial weights, data order
and augmentation) and a verdict worded by the bands (mean ± sd over the
seeds; see `seeds.band_verdict`). Accuracy is the shrunk network's in
LiteRT with BatchNorm recalibrated, in points:

- BatchNorm: targeted dense as trained is within 1 point of recalibrated;
- (a) at 50% of the channel groups removed, targeted loses at most 1 point
  of its own dense accuracy;
- (b) targeted dense is within 2 points of plain (none) dense;
- (c) at 50%, targeted beats none by at least 5 points;
- (d) at 50% (equal LiteRT latency: the same architecture), targeted minus
  narrow, slimming and finetune: the difference and its band, no verdict.

"targeted" is the setting chosen on the validation split (`choose`): of
the runs labelled `targeted...` (`targeted`, `targeted(clean_steps=0.2)`,
...), the one with the highest mean validation accuracy at 50% among those
whose dense validation accuracy is within 2 points of plain training's
(else the highest at 50%), the means taken over the seeds every candidate
has run (so that a setting with more seeds is not compared on other
seeds). The test set plays no part in the choice.

Usage: python docs/results/mobile_claims.py [docs/results/cifar10_mobile]
"""

import argparse
import collections
import os
import sys

from keras_tdrop.experiments.mobile_compare import load_rows
from keras_tdrop.experiments.mobile_compare import summarize
from keras_tdrop.experiments.seeds import band_verdict
from keras_tdrop.pruning.tables import format_rows

HALF = 0.5


def per_seed(rows):
    """`{(method, fraction): {seed: accuracy %}}` and `{method: {seed:
    as-trained dense accuracy %}}`; a narrow network sits at its width."""
    accuracy = collections.defaultdict(dict)
    trained = collections.defaultdict(dict)
    for r in rows:
        accuracy[r["method"], r["fraction"]][r["seed"]] = (
            100 * r["accuracy_tflite"]
        )
        if r["accuracy_as_trained"] is not None and r["fraction"] == 0.0:
            trained[r["method"]][r["seed"]] = 100 * r["accuracy_as_trained"]
    return accuracy, trained


def paired(a, b):
    """Per seed present in both: a - b."""
    return [a[s] - b[s] for s in sorted(set(a) & set(b))]


def _mean_val(rows, method, fraction, seeds):
    values = [
        r["val_accuracy"]
        for r in rows
        if r["method"] == method
        and r["fraction"] == fraction
        and r["seed"] in seeds
    ]
    return 100 * sum(values) / len(values) if values else None


def choose(rows):
    """`(label, lines)`: the targeted setting chosen on the validation
    split (see the module docstring), and one line per candidate."""
    labels = sorted(
        {r["method"] for r in rows if r["method"].startswith("targeted")}
    )
    run = collections.defaultdict(set)
    for r in rows:
        if r["fraction"] == HALF:
            run[r["method"]].add(r["seed"])
    seeds = (
        set.intersection(*(run[label] for label in labels)) if labels else set()
    )
    plain = _mean_val(rows, "none", 0.0, seeds)
    lines, scored = [], []
    for label in labels:
        dense = _mean_val(rows, label, 0.0, seeds)
        half = _mean_val(rows, label, HALF, seeds)
        if dense is None or half is None:
            continue
        close = plain is None or plain - dense <= 2.0
        scored.append((close, half, label))
        lines.append(
            f"  {label:<34} validation: dense {dense:6.2f}, at 50% "
            f"{half:6.2f}{'' if close else '  (dense > 2 below none)'}"
        )
    if not scored:
        return "targeted", ["  no targeted runs"]
    lines.insert(0, f"  (seeds every setting has: {sorted(seeds)})")
    return max(scored)[2], lines


def claims(rows, targeted="targeted"):
    """`[(claim, value text, verdict)]` for the `targeted` label."""
    accuracy, trained = per_seed(rows)
    td_dense = accuracy.get((targeted, 0.0), {})
    td_half = accuracy.get((targeted, HALF), {})
    found = []

    def add(claim, values, bound, at_least):
        if not values:
            found.append((claim, "no runs", "-"))
        else:
            found.append((claim, *band_verdict(values, bound, at_least)))

    add(
        "targeted dense: |as trained - recalibrated| <= 1",
        [abs(v) for v in paired(trained.get(targeted, {}), td_dense)],
        1.0,
        False,
    )
    add(
        "none dense: |as trained - recalibrated| (for reference) <= 1",
        [
            abs(v)
            for v in paired(
                trained.get("none", {}), accuracy.get(("none", 0.0), {})
            )
        ],
        1.0,
        False,
    )
    add("(a) targeted: loss at 50% <= 1", paired(td_dense, td_half), 1.0, False)
    add(
        "(b) targeted dense: none dense minus it <= 2",
        paired(accuracy.get(("none", 0.0), {}), td_dense),
        2.0,
        False,
    )
    add(
        "(c) at 50%: targeted minus none >= 5",
        paired(td_half, accuracy.get(("none", HALF), {})),
        5.0,
        True,
    )
    for other in ("narrow", "slimming", "finetune"):
        values = paired(td_half, accuracy.get((other, HALF), {}))
        text = band_verdict(values, 0.0, True)[0] if values else "no runs"
        found.append((f"(d) at 50%: targeted minus {other}", text, "-"))
    return found


def figures(rows):
    """The table behind the claims (`mobile_compare.summarize`), in %."""
    table = []
    for r in summarize(rows):
        sd = (
            ""
            if r["accuracy_sd"] is None
            else f" ± {100 * r['accuracy_sd']:.2f}"
        )
        trained = (
            "-"
            if r["as_trained"] is None
            else f"{100 * r['as_trained']:.2f}"
            + (
                ""
                if r["as_trained_sd"] is None
                else f" ± {100 * r['as_trained_sd']:.2f}"
            )
        )
        table.append(
            {
                "method": r["method"],
                "removed": f"{r['fraction']:.0%}",
                "seeds": r["seeds"],
                "MACs": r["macs"],
                "LiteRT ms": f"{r['latency_ms']:.3f}",
                "accuracy %": f"{100 * r['accuracy']:.2f}{sd}",
                "dense as trained %": trained,
            }
        )
    return format_rows(table)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "results",
        nargs="?",
        default="docs/results/cifar10_mobile",
        help="the folder of keras-tdrop mobile's run folders",
    )
    args = parser.parse_args(argv)
    if not os.path.isdir(args.results):
        sys.exit(f"results must be a folder. Received: {args.results!r}")
    rows = load_rows(args.results)
    targeted, lines = choose(rows)
    print(
        "Targeted dropout's setting, chosen on the validation split: "
        + targeted
    )
    print("\n".join(lines))
    print()
    print(
        f"Mobile payoff claims, {args.results} (LiteRT accuracy of the "
        f"shrunk network, BatchNorm recalibrated; points; targeted = "
        f"{targeted})"
    )
    found = claims(rows, targeted)
    width = max(len(c[0]) for c in found)
    for claim, value, word in found:
        print(f"  {claim:<{width}}  {value:<22}  {word}")
    print()
    print(f"Accuracy behind the claims, {args.results}: mean ± sd")
    print(figures(rows) if rows else "no runs")


if __name__ == "__main__":
    main()
