import csv
import json
from pathlib import Path

import pytest

from keras_tdrop.experiments import compare
from tests.tolerance import approx


def make_run(path, name, weight, unit=None, config=None, sparsity_at_zero=0.0):
    """A finished run folder: config.json (`config`, default just the
    experiment's name) and the sweeps; every row's sparsity is its fraction,
    or `sparsity_at_zero` where that is more (a run saved already pruned)."""
    path.mkdir(parents=True)
    (path / "config.json").write_text(
        json.dumps(config if config is not None else {"experiment": name})
    )
    for targeting, swept in (("weight", weight), ("unit", unit)):
        if swept is None:
            continue
        rows = [
            {
                "fraction": f,
                "sparsity": max(f, sparsity_at_zero),
                "loss": 1.0,
                "accuracy": a,
            }
            for f, a in swept
        ]
        compare.write_sweep_csv(rows, str(path / f"sweep_{targeting}.csv"))
    return str(path)


def test_table_rows_are_fractions_and_runs(tmp_path, capsys):
    a = make_run(
        tmp_path / "a",
        "none",
        [(0.0, 0.9371), (0.5, 0.922), (0.9, 0.1463)],
        [(0.0, 0.9369), (0.5, 0.1263)],
    )
    b = make_run(
        tmp_path / "b",
        "targeted_weight_0.75_0.9",
        [(0.0, 0.9253), (0.9, 0.9248)],
    )
    tables = compare.compare([a, b], out=str(tmp_path / "out"))
    assert tables["weight"].splitlines() == [
        "weight pruning, test accuracy (%), mean ± sd (seeds)",
        "prune %                       run    accuracy (%)  compression"
        "  speedup",
        "-------  ------------------------  --------------  -----------"
        "  -------",
        "0%                           none  93.71 (1 seed)            -"
        "        -",
        "0%       targeted_weight_0.75_0.9  92.53 (1 seed)            -"
        "        -",
        "50%                          none  92.20 (1 seed)            -"
        "        -",
        "90%                          none  14.63 (1 seed)            -"
        "        -",
        "90%      targeted_weight_0.75_0.9  92.48 (1 seed)            -"
        "        -",
    ]
    assert [line.split()[0] for line in tables["unit"].splitlines()] == [
        "unit",
        "prune",
        "-------",
        "0%",
        "50%",
    ]
    # Single seeds are not judged.
    assert tables["overlap_weight"].splitlines()[3:] == [
        "0%       none vs targeted_weight_0.75_0.9  93.71 (1 seed) vs "
        "92.53 (1 seed)   1 seed",
        "90%      none vs targeted_weight_0.75_0.9  14.63 (1 seed) vs "
        "92.48 (1 seed)   1 seed",
    ]
    assert "overlap_unit" not in tables
    assert "93.71 (1 seed)" in capsys.readouterr().out
    wide = (tmp_path / "out" / "compare_weight.csv").read_text().splitlines()
    assert wide[0] == "fraction,none,targeted_weight_0.75_0.9"
    assert wide[2] == "0.500000,0.922000,"
    assert (tmp_path / "out" / "compare.png").stat().st_size > 1000
    text = (tmp_path / "out" / "compare.txt").read_text()
    assert text == "\n\n".join(tables.values()) + "\n"


def test_same_experiment_without_seeds_is_labelled_by_folder(tmp_path):
    a = make_run(tmp_path / "seed0", "none", [(0.0, 0.5)])
    b = make_run(tmp_path / "seed1", "none", [(0.0, 0.6)])
    tables = compare.compare([a, b], fractions=[0.0], verbose=0)
    assert [line.split()[1] for line in tables["weight"].splitlines()[3:]] == [
        "seed0",
        "seed1",
    ]


def test_sweep_csv_round_trip(tmp_path):
    rows = [{"fraction": 0.25, "sparsity": 0.2, "loss": 0.5, "accuracy": 0.75}]
    path = tmp_path / "s.csv"
    compare.write_sweep_csv(rows, str(path))
    assert compare.read_sweep_csv(str(path)) == rows
    assert not (tmp_path / "s.csv.tmp").exists()


def test_bad_input(tmp_path):
    with pytest.raises(ValueError, match="Received: run_dirs='x'"):
        compare.compare("x")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="holds no sweep_weight.csv"):
        compare.compare([str(tmp_path / "empty")])


def test_random_prune_table(tmp_path):
    runs = []
    for fraction, accuracy in ((0.5, 0.9258), (0.9, 0.9066)):
        path = tmp_path / f"rp{fraction}"
        runs.append(
            make_run(
                path,
                f"random_prune_weight_{fraction}",
                [(0.0, accuracy), (0.5, 0.5)],
            )
        )
        (path / "config.json").write_text(
            json.dumps(
                {
                    "experiment": f"random_prune_weight_{fraction}",
                    "method": "random_prune",
                    "params": {"fraction": fraction, "targeting": "weight"},
                }
            )
        )
    runs.append(
        make_run(
            tmp_path / "td",
            "ramping_weight",
            [(0.0, 0.94), (0.5, 0.9329), (0.9, 0.9251)],
        )
    )
    tables = compare.compare(runs, verbose=0)
    assert tables["random_prune"].splitlines() == [
        "random pruning vs post hoc pruning, test accuracy (%)",
        "run                 weight 50%      weight 90%",
        "--------------  --------------  --------------",
        "random-prune    92.58 (1 seed)  90.66 (1 seed)",
        "ramping_weight  93.29 (1 seed)  92.51 (1 seed)",
    ]
    assert "random_prune" not in compare.compare(runs[2:], verbose=0)


def test_random_prune_table_pairs_ramped_runs_by_gamma(tmp_path):
    runs = []
    for fraction, accuracy in ((0.5, 0.90), (0.75, 0.85)):
        runs.append(
            make_run(
                tmp_path / f"rp{fraction}",
                f"random_prune_weight_{fraction}",
                [(0.0, accuracy), (0.5, 0.2), (0.75, 0.1)],
                config={
                    "experiment": f"random_prune_weight_{fraction}",
                    "method": "random_prune",
                    "params": {"fraction": fraction, "targeting": "weight"},
                },
            )
        )
    for gamma, weight in (
        (0.5, [(0.0, 0.93), (0.5, 0.93), (0.75, 0.40)]),
        (0.75, [(0.0, 0.91), (0.5, 0.91), (0.75, 0.91)]),
    ):
        runs.append(
            make_run(
                tmp_path / f"ramp{gamma}",
                f"ramping_weight_{gamma}",
                weight,
                config={
                    "experiment": f"ramping_weight_{gamma}",
                    "method": "targeted",
                    "params": {
                        "rate": 0.99,
                        "target_rate": gamma,
                        "targeting": "weight",
                    },
                    "ramp": {"schedule": "piecewise", "ramp_steps": [1, 2]},
                },
                sparsity_at_zero=gamma,
            )
        )
    runs.append(make_run(tmp_path / "none", "none", [(0.0, 0.95), (0.5, 0.94)]))
    (tmp_path / "ramp0.75" / "dense.json").write_text(
        json.dumps({"dense_test_accuracy": 0.1})
    )
    tables = compare.compare(runs, verbose=0)
    # Each ramped run fills the column of its own gamma only.
    assert tables["random_prune"].splitlines() == [
        "random pruning vs post hoc pruning, test accuracy (%)",
        "run                         weight 50%      weight 75%",
        "----------------------  --------------  --------------",
        "random-prune            90.00 (1 seed)  85.00 (1 seed)",
        "ramping TD (gamma = p)  93.00 (1 seed)  91.00 (1 seed)",
        "none                    94.00 (1 seed)               -",
    ]
    # The weight table says which runs were saved already pruned.
    assert tables["weight"].splitlines()[-2:] == [
        "(ramping_weight_0.5: saved already pruned, as it is evaluated: "
        "50.00% sparse at 0%)",
        "(ramping_weight_0.75: saved already pruned, as it is evaluated: "
        "75.00% sparse at 0%; 10.00 with the dense weights)",
    ]


# Three seeds of two methods; at 0% their ranges overlap, at 50% not.
SEEDS = {
    "none": {0.0: (0.90, 0.91, 0.92), 0.5: (0.50, 0.52, 0.54)},
    "targeted_weight_0.5_0.5": {
        0.0: (0.89, 0.90, 0.91),
        0.5: (0.60, 0.61, 0.62),
    },
}


def make_seeds(tmp_path, seed_in_config=True):
    """`<experiment>-s<seed>` folders; prune_sweep's size columns: 1,000
    parameters, 1,000 or 500 non-zero (+ the seed, so that the
    compression varies), FLOPs unchanged."""
    dirs = []
    for seed in range(3):
        for name, at in SEEDS.items():
            path = tmp_path / f"{name}-s{seed}"
            path.mkdir()
            config = {"experiment": name, "model": "resnet8"}
            if seed_in_config:
                config["seed"] = seed
            (path / "config.json").write_text(json.dumps(config))
            rows = [
                {
                    "fraction": f,
                    "sparsity": f,
                    "loss": 1.0,
                    "accuracy": accuracies[seed],
                    "parameters": 1000,
                    "nonzero": int(1000 * (1 - f)) + seed,
                    "compression": 1000 / (int(1000 * (1 - f)) + seed),
                    "flops": 4000,
                    "speedup": 1.0,
                }
                for f, accuracies in at.items()
            ]
            compare.write_sweep_csv(rows, str(path / "sweep_weight.csv"))
            dirs.append(str(path))
    return dirs


@pytest.mark.parametrize("seed_in_config", [True, False])
def test_seeds_are_aggregated(tmp_path, seed_in_config, monkeypatch):
    from matplotlib.axes import Axes

    bands = []
    fill_between = Axes.fill_between
    monkeypatch.setattr(
        Axes,
        "fill_between",
        lambda ax, x, low, high, **kw: (
            bands.append((low, high)) or fill_between(ax, x, low, high, **kw)
        ),
    )
    dirs = make_seeds(tmp_path, seed_in_config)
    out = tmp_path / "out"
    tables = compare.compare(dirs, out=str(out), verbose=0)
    assert tables["weight"].splitlines() == [
        "weight pruning, test accuracy (%), mean ± sd (seeds)",
        "prune %                      run      accuracy (%)  compression"
        "      speedup",
        "-------  -----------------------  ----------------  -----------"
        "  -----------",
        "0%                          none  91.00 ± 1.00 (3)  1.00 ± 0.00"
        "  1.00 ± 0.00",
        "0%       targeted_weight_0.5_0.5  90.00 ± 1.00 (3)  1.00 ± 0.00"
        "  1.00 ± 0.00",
        "50%                         none  52.00 ± 2.00 (3)  2.00 ± 0.00"
        "  1.00 ± 0.00",
        "50%      targeted_weight_0.5_0.5  61.00 ± 1.00 (3)  2.00 ± 0.00"
        "  1.00 ± 0.00",
    ]
    assert [line.split()[-1] for line in tables["overlap_weight"].splitlines()][
        3:
    ] == ["overlap", "differ"]
    assert "90.00-92.00 vs 89.00-91.00" in tables["overlap_weight"]
    assert "50.00-54.00 vs 60.00-62.00" in tables["overlap_weight"]
    with open(out / "summary_weight.csv", newline="") as f:
        summary = list(csv.DictReader(f))
    none_50 = [r for r in summary if r["run"] == "none"][1]
    assert none_50["fraction"] == "0.500000"
    assert none_50["n"] == "3"
    assert float(none_50["accuracy"]) == approx(0.52)
    assert float(none_50["accuracy_sd"]) == approx(0.02)
    # nonzero 500, 501, 502 of 1,000.
    assert float(none_50["compression"]) == approx(
        (1000 / 500 + 1000 / 501 + 1000 / 502) / 3, abs=1e-6
    )
    verdicts = (out / "overlap_weight.csv").read_text().splitlines()
    assert [line.split(",")[-1] for line in verdicts] == [
        "verdict",
        "overlap",
        "differ",
    ]
    # One band per method, mean +- sd.
    assert len(bands) == 2
    assert [round(v, 6) for v in bands[0][0]] == [0.9, 0.5]
    assert [round(v, 6) for v in bands[0][1]] == [0.92, 0.54]
    assert (out / "compare.png").stat().st_size > 1000


def test_seed_read_from_folder_or_config(tmp_path):
    from keras_tdrop.experiments import seeds

    assert seeds.run_seed("runs/none-s7", {}) == 7
    assert seeds.run_seed("runs/none-s7", {"seed": 3}) == 3
    assert seeds.run_seed("runs/none", {}) is None


def test_runs_sharing_a_seed_or_other_settings_stay_apart(tmp_path):
    from keras_tdrop.experiments import seeds

    runs = [
        ("a-s0", "none", {}, {"seed": 0, "epochs": 5}),
        ("b-s0", "none", {}, {"seed": 0, "epochs": 5}),
        ("c-s1", "none", {}, {"seed": 1, "epochs": 5}),
        ("d-s2", "none", {}, {"seed": 2, "epochs": 6}),
    ]
    groups = seeds.group_runs(runs)
    assert [[m[0] for m in members] for _, members in groups] == [
        ["a-s0", "c-s1"],
        ["b-s0"],
        ["d-s2"],
    ]


def test_runs_saved_before_noise_join_those_that_name_their_semantics():
    from keras_tdrop.experiments import seeds

    unit = {"rate": 0.9, "target_rate": 0.75, "targeting": "unit"}
    old = {"method": "targeted", "params": unit}
    runs = [
        ("e-s0", "t", {}, {**old, "seed": 0}),
        ("e-s1", "t", {}, {**old, "seed": 1}),
        (
            "e-s2",
            "t",
            {},
            {**old, "seed": 2, "params": {**unit, "noise": "element"}},
        ),
        (
            "c-s3",
            "t",
            {},
            {**old, "seed": 3, "params": {**unit, "noise": "column"}},
        ),
    ]
    groups = seeds.group_runs(runs)
    assert [[m[0] for m in members] for _, members in groups] == [
        ["e-s0", "e-s1", "e-s2"],
        ["c-s3"],
    ]


def test_mean_sd_and_verdicts():
    from keras_tdrop.experiments import seeds

    assert seeds.mean_sd([0.5, 0.52, 0.54, None]) == (
        approx(0.52),
        approx(0.02),
        3,
    )
    assert seeds.mean_sd([0.5]) == (0.5, None, 1)
    a = {"accuracy": 0.5, "accuracy_sd": 0.1, "n": 3}
    b = {"accuracy": 0.7, "accuracy_sd": 0.1, "n": 3}
    c = {"accuracy": 0.71, "accuracy_sd": 0.09, "n": 3}
    assert seeds.verdict(a, b) == "overlap"  # they touch at 0.6
    assert seeds.verdict(a, c) == "differ"
    assert seeds.verdict(a, {"accuracy": 0.9, "accuracy_sd": None}) == "1 seed"
    assert seeds.cell(a) == "50.00 ± 10.00 (3)"
    assert seeds.cell({"accuracy": 0.5, "n": 1}) == "50.00 (1 seed)"


def test_results_folder_lists_its_runs(tmp_path):
    dirs = make_seeds(tmp_path)
    (tmp_path / "notes").mkdir()
    assert compare.find_runs(str(tmp_path)) == sorted(dirs)
    with pytest.raises(ValueError, match="Received: results="):
        compare.find_runs(str(tmp_path / "missing"))


RESULTS = Path(__file__).resolve().parents[2] / "docs" / "results"


@pytest.mark.parametrize(
    "scale",
    sorted(
        p.parent.name
        for p in RESULTS.glob("*/compare")
        # keras-tdrop mobile's scales: tests/docs/test_mobile_claims.py
        if not p.parent.name.startswith("cifar10_mobile")
    ),
)
def test_committed_results_are_what_compare_prints(tmp_path, scale):
    """`make results` rewrites nothing: the committed tables are the ones
    `keras-tdrop compare --results` prints from the committed runs."""
    from keras_tdrop.experiments import cli

    out = tmp_path / "out"
    argv = ["compare", "--results", str(RESULTS / scale), "--out", str(out)]
    assert cli.main(argv) == 0
    committed = RESULTS / scale / "compare"
    for name in ("compare.txt", "summary_weight.csv", "overlap_unit.csv"):
        # A scale of one experiment has no pairs, so no overlap file.
        assert (out / name).exists() == (committed / name).exists(), name
        if (committed / name).exists():
            assert (out / name).read_text() == (committed / name).read_text()
    assert (committed / "compare.txt").exists()


def test_readme_shows_the_committed_tables():
    """The docs' multi-seed tables are the committed compare.txt's."""
    readme = (RESULTS.parent / "reproducing.md").read_text()
    text = (RESULTS / "mnist_mlp" / "compare" / "compare.txt").read_text()
    blocks = text.strip("\n").split("\n\n")
    shown = [b for b in blocks if "test accuracy (%)" in b]
    assert len(shown) == 2
    for block in shown:
        assert f"```\n{block}\n```" in readme


def add_recalibrated(path, weight, unit=None):
    for targeting, swept in (("weight", weight), ("unit", unit)):
        if swept is None:
            continue
        rows = [
            {"fraction": f, "sparsity": f, "loss": 1.0, "accuracy": a}
            for f, a in swept
        ]
        compare.write_sweep_csv(
            rows, str(Path(path) / f"sweep_{targeting}_recalibrated.csv")
        )


def test_recalibrated_sweeps_are_their_own_tables(tmp_path, capsys):
    results = tmp_path / "results"
    bn = make_run(
        results / "bn",
        "none",
        [(0.0, 0.90), (0.5, 0.20)],
        [(0.0, 0.89), (0.5, 0.11)],
    )
    add_recalibrated(bn, [(0.0, 0.91), (0.5, 0.80)], [(0.0, 0.9), (0.5, 0.57)])
    make_run(results / "mlp", "toy", [(0.0, 0.70), (0.5, 0.60)])
    assert compare.find_runs(str(results)) == [bn, str(results / "mlp")]
    assert compare.find_runs(str(results), recalibrated=True) == [bn]
    out = tmp_path / "out"
    plain = compare.compare([bn], out=str(out), verbose=0)
    tables = compare.compare(
        compare.find_runs(str(results), recalibrated=True),
        out=str(out),
        recalibrated=True,
        verbose=0,
    )
    cells = [line.split()[2] for line in tables["weight"].splitlines()[3:]]
    assert cells == ["91.00", "80.00"]
    cells = [line.split()[2] for line in tables["unit"].splitlines()[3:]]
    assert cells == ["90.00", "57.00"]
    cells = [line.split()[2] for line in plain["weight"].splitlines()[3:]]
    assert cells == ["90.00", "20.00"]
    # Both kept side by side in one folder.
    text = (out / "compare_recalibrated.txt").read_text()
    assert text.startswith(compare.RECALIBRATED_NOTE + "\n\n")
    assert "80.00 (1 seed)" in text
    assert "80.00" not in (out / "compare.txt").read_text()
    wide = (out / "compare_weight_recalibrated.csv").read_text().splitlines()
    assert wide == ["fraction,none", "0.000000,0.910000", "0.500000,0.800000"]
    assert (out / "compare_weight.csv").read_text().splitlines()[2] == (
        "0.500000,0.200000"
    )
    assert (out / "compare_recalibrated.png").stat().st_size > 1000
    with pytest.raises(ValueError, match="holds no sweep_weight_recalibrated"):
        compare.compare([str(results / "mlp")], recalibrated=True, verbose=0)


def test_cli_recalibrated_flag(tmp_path, capsys):
    from keras_tdrop.experiments import cli

    run = make_run(tmp_path / "r" / "bn", "none", [(0.0, 0.9), (0.5, 0.2)])
    add_recalibrated(run, [(0.0, 0.9), (0.5, 0.75)])
    assert cli.main(["compare", "--results", str(tmp_path / "r")]) == 0
    printed = capsys.readouterr().out
    assert "20.00 (1 seed)" in printed and "75.00" not in printed
    assert (
        cli.main(
            ["compare", "--results", str(tmp_path / "r"), "--recalibrated"]
        )
        == 0
    )
    printed = capsys.readouterr().out
    assert printed.startswith(compare.RECALIBRATED_NOTE)
    assert "75.00 (1 seed)" in printed and "20.00" not in printed
