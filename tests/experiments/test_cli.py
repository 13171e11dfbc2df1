import csv
import os
from pathlib import Path

import pytest

from keras_tdrop.experiments import _argtypes
from keras_tdrop.experiments import cli
from keras_tdrop.experiments import datasets

REPO = Path(__file__).resolve().parents[1]
DATA_DIR = os.environ.get("TFDS_DATA_DIR") or str(
    REPO.parent / "shared" / "tensorflow_datasets"
)
TINY = ["--epochs", "1", "--train-limit", "256", "--test-limit", "200"]


@pytest.fixture(autouse=True)
def offline(monkeypatch):
    """Nothing in these tests may download."""
    monkeypatch.setattr(datasets, "has_network", lambda *a, **k: False)


def test_demo(tmp_path, capsys):
    out = tmp_path / "out"
    status = cli.main(
        ["demo", "--out", str(out), "--data-dir", DATA_DIR, "--seed", "3"]
        + TINY
    )
    assert status == 0
    with open(out / "demo.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [float(r["prune_fraction"]) for r in rows] == [
        i / 10 for i in range(10)
    ]
    assert (out / "demo.png").stat().st_size > 0
    printed = capsys.readouterr().out
    assert "rate=0.75, target_rate=0.9, ramp_fraction=0.5" in printed
    assert "prune %  sparsity    plain  targeted" in printed


def test_demo_passes_arguments(monkeypatch):
    seen = {}
    monkeypatch.setattr(
        "keras_tdrop.experiments.demo.run_demo",
        lambda **kwargs: seen.update(kwargs),
    )
    status = cli.main(
        [
            "demo",
            "--rate",
            "0.5",
            "--target-rate",
            "0.75",
            "--batch-size",
            "32",
            "--ramp-fraction",
            "0",
            "--quiet",
            "--data-dir",
            "/data",
        ]
        + TINY
    )
    assert status == 0
    assert seen == {
        "out_dir": "demo_out",
        "data_dir": "/data",
        "epochs": 1,
        "batch_size": 32,
        "train_limit": 256,
        "test_limit": 200,
        "rate": 0.5,
        "target_rate": 0.75,
        "ramp_fraction": None,
        "seed": 0,
        "verbose": 0,
    }


def test_data_dir_defaults_to_env(monkeypatch):
    monkeypatch.setenv("TFDS_DATA_DIR", "/somewhere/tfds")
    args = cli.build_parser().parse_args(["demo"])
    assert args.data_dir == "/somewhere/tfds"
    assert args.out == "demo_out"


def test_missing_data_exits_2(tmp_path, capsys):
    empty = tmp_path / "no_data"
    status = cli.main(
        ["demo", "--out", str(tmp_path / "out"), "--data-dir", str(empty)]
        + TINY
    )
    assert status == 2
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith("keras-tdrop: error: Dataset 'mnist'")
    assert str(empty) in lines[0]
    assert "Traceback" not in captured.err
    assert not (tmp_path / "out" / "demo.csv").exists()


@pytest.mark.parametrize(
    "argv",
    [
        ["demo", "--rate", "1.5"],
        ["demo", "--epochs", "0"],
        ["demo", "--train-limit", "-3"],
        ["nonsense"],
        [],
    ],
)
def test_usage_errors_exit_2(argv, capsys):
    with pytest.raises(SystemExit) as info:
        cli.main(argv)
    assert info.value.code == 2
    assert "usage: keras-tdrop" in capsys.readouterr().err


@pytest.mark.parametrize("text", ["0,1.5", "a", "0,,1", "", "nan", "-0.1"])
@pytest.mark.parametrize(
    "command", [["demo"], ["sweep", "m.keras", "--data", "mnist"]]
)
def test_bad_fractions_exit_2(command, text, capsys):
    with pytest.raises(SystemExit) as info:
        cli.main(command + ["--fractions", text])
    assert info.value.code == 2
    assert (
        f"--fractions: expected comma-separated fractions in [0, 1], "
        f"got {text!r}"
    ) in capsys.readouterr().err


def test_one_fraction_parser():
    parser = cli.build_parser()
    commands = parser._subparsers._group_actions[0].choices
    types = {
        name: action.type
        for name, sub in commands.items()
        for action in sub._actions
        if action.dest == "fractions"
    }
    assert set(types) == {"demo", "mobile", "train", "compare", "sweep"}
    assert set(types.values()) == {_argtypes.fraction_list}
    assert _argtypes.fraction_list(" 0, 0.25,1") == (0.0, 0.25, 1.0)
