import json

import pytest

from keras_tdrop.experiments import compare


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


def test_table_rows_are_fractions_and_columns_runs(tmp_path, capsys):
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
        "weight pruning, test accuracy (%)",
        "prune %      none  targeted_weight_0.75_0.9",
        "-" * 43,
        "     0%     93.71                     92.53",
        "    50%     92.20                         -",
        "    90%     14.63                     92.48",
    ]
    assert tables["unit"].splitlines()[1:] == [
        "prune %      none",
        "-" * 17,
        "     0%     93.69",
        "    50%     12.63",
    ]
    assert "93.71" in capsys.readouterr().out
    wide = (tmp_path / "out" / "compare_weight.csv").read_text().splitlines()
    assert wide[0] == "fraction,none,targeted_weight_0.75_0.9"
    assert wide[2] == "0.500000,0.922000,"
    assert (tmp_path / "out" / "compare.png").stat().st_size > 1000


def test_same_experiment_twice_is_labelled_by_folder(tmp_path):
    a = make_run(tmp_path / "seed0", "none", [(0.0, 0.5)])
    b = make_run(tmp_path / "seed1", "none", [(0.0, 0.6)])
    tables = compare.compare([a, b], fractions=[0.0], verbose=0)
    assert tables["weight"].splitlines()[1].split() == [
        "prune",
        "%",
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
        "                weight  50%  weight  90%",
        "-" * 40,
        "random-prune          92.58        90.66",
        "ramping_weight        93.29        92.51",
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
        "                        weight  50%  weight  75%",
        "-" * 48,
        "random-prune                  90.00        85.00",
        "ramping TD (gamma = p)        93.00        91.00",
        "none                          94.00            -",
    ]
    # The weight table says which runs were saved already pruned.
    assert tables["weight"].splitlines()[-2:] == [
        "(ramping_weight_0.5: saved already pruned, as it is evaluated: "
        "50.00% sparse at 0%)",
        "(ramping_weight_0.75: saved already pruned, as it is evaluated: "
        "75.00% sparse at 0%; 10.00 with the dense weights)",
    ]
