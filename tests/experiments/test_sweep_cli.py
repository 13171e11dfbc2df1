import csv
import os
from pathlib import Path

import keras
import numpy as np
import pytest

from keras_tdrop.experiments import cli
from keras_tdrop.experiments import datasets
from keras_tdrop.experiments.models import mnist_mlp
from keras_tdrop.pruning import apply_masks
from keras_tdrop.pruning import compute_masks
from keras_tdrop.pruning import prune
from tests.tolerance import approx

REPO = Path(__file__).resolve().parents[2]
DATA_DIR = os.environ.get("TFDS_DATA_DIR") or str(
    REPO.parent / "shared" / "tensorflow_datasets"
)
LIMIT = 300


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """A small MLP trained briefly on real MNIST, saved compiled, and a
    half-pruned copy saved uncompiled."""
    folder = tmp_path_factory.mktemp("models")
    original = datasets.has_network
    datasets.has_network = lambda *a, **k: False
    try:
        x, y = datasets.load_numpy("mnist", "train", DATA_DIR, limit=1024)
        x_test, y_test = datasets.load_numpy("mnist", "test", DATA_DIR, LIMIT)
    finally:
        datasets.has_network = original
    keras.utils.set_random_seed(0)
    model = mnist_mlp(units=(32, 16))
    model.compile(
        "adam",
        keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    model.fit(x, y, epochs=2, batch_size=64, verbose=0)
    model.save(folder / "plain.keras")
    half = prune(model, 0.5)
    keras.Model(half.inputs, half.outputs).save(folder / "bare.keras")
    return folder, model, x_test, y_test


def run_cli(args, monkeypatch):
    monkeypatch.setattr(datasets, "has_network", lambda *a, **k: False)
    return cli.main(args)


def accuracy(model, x, y):
    logits = model.predict(x, verbose=0)
    return float(np.mean(np.argmax(logits, axis=1) == y))


def test_sweep_two_models(saved, tmp_path, monkeypatch, capsys):
    folder, model, x, y = saved
    assert not keras.saving.load_model(folder / "bare.keras").compiled
    status = run_cli(
        [
            "sweep",
            str(folder / "plain.keras"),
            str(folder / "bare.keras"),
            "--data",
            "mnist",
            "--data-dir",
            DATA_DIR,
            "--test-limit",
            str(LIMIT),
            "--fractions",
            "0,0.5,0.9",
            "--out",
            str(tmp_path),
        ],
        monkeypatch,
    )
    assert status == 0
    with open(tmp_path / "sweep.csv", newline="") as f:
        table = list(csv.DictReader(f))
    # The half-pruned copy is sparse at 0% already: a sparsity column each.
    assert list(table[0]) == [
        "prune_fraction",
        "sparsity_plain",
        "accuracy_plain",
        "sparsity_bare",
        "accuracy_bare",
    ]
    half = (392 * 32 + 16 * 16) / (784 * 32 + 32 * 16)
    assert float(table[0]["sparsity_bare"]) == approx(half, abs=1e-6)
    assert float(table[1]["sparsity_bare"]) == approx(half, abs=1e-6)
    for row in table:
        fraction = float(row["prune_fraction"])
        expected = accuracy(prune(model, fraction), x, y)
        assert float(row["accuracy_plain"]) == approx(expected, abs=1e-6)
    # fc1 784 x 32 and fc2 32 x 16: floor(0.9 * rows) of each column.
    removed = 705 * 32 + 28 * 16
    assert float(table[2]["sparsity_plain"]) == approx(
        removed / (784 * 32 + 32 * 16), abs=1e-6
    )
    # The half-pruned copy, pruned again at 50%, is the same model.
    assert table[1]["accuracy_bare"] == table[1]["accuracy_plain"]
    assert table[0]["accuracy_bare"] == table[1]["accuracy_plain"]
    printed = capsys.readouterr().out
    assert "prune %  sp. plain    plain  sp. bare     bare" in printed
    assert "[3/3] pruned 90%" in printed
    assert (tmp_path / "sweep.png").read_bytes()[:4] == b"\x89PNG"


def test_unit_global_and_names(saved, tmp_path, monkeypatch, capsys):
    folder, model, x, y = saved
    status = run_cli(
        [
            "sweep",
            str(folder / "plain.keras"),
            "--data",
            "mnist",
            "--data-dir",
            DATA_DIR,
            "--test-limit",
            str(LIMIT),
            "--fractions",
            "0.5",
            "--targeting",
            "unit",
            "--scope",
            "global",
            "--names",
            "mlp",
            "--out",
            str(tmp_path),
            "--quiet",
        ],
        monkeypatch,
    )
    assert status == 0
    assert capsys.readouterr().out == ""
    with open(tmp_path / "sweep.csv", newline="") as f:
        row = next(csv.DictReader(f))
    # 48 prunable units in all (the logits excluded): 24 removed.
    masks = compute_masks(model, 0.5, "unit", scope="global")
    assert sum(int((~m.any(axis=0)).sum()) for m in masks.values()) == 24
    zeros = sum(int((m == 0).sum()) for m in masks.values())
    assert float(row["sparsity"]) == approx(
        zeros / (784 * 32 + 32 * 16), abs=1e-6
    )
    assert float(row["accuracy_mlp"]) == approx(
        accuracy(apply_masks(model, masks), x, y), abs=1e-6
    )


def test_errors(saved, tmp_path, monkeypatch, capsys):
    folder, _, _, _ = saved
    with pytest.raises(SystemExit, match=r"no such file"):
        run_cli(
            ["sweep", str(tmp_path / "none.keras"), "--data", "mnist"],
            monkeypatch,
        )
    with pytest.raises(SystemExit, match=r"--names must give 1"):
        run_cli(
            [
                "sweep",
                str(folder / "plain.keras"),
                "--data",
                "mnist",
                "--names",
                "a,b",
            ],
            monkeypatch,
        )
    with pytest.raises(SystemExit):
        run_cli(["sweep", str(folder / "plain.keras")], monkeypatch)
    assert "--data" in capsys.readouterr().err
    empty = tmp_path / "no_data"
    empty.mkdir()
    status = run_cli(
        [
            "sweep",
            str(folder / "plain.keras"),
            "--data",
            "mnist",
            "--data-dir",
            str(empty),
        ],
        monkeypatch,
    )
    assert status == 2
    assert "error" in capsys.readouterr().err


@pytest.fixture(scope="module")
def saved_bn(tmp_path_factory):
    """A small BatchNorm MLP trained briefly on real MNIST, saved."""
    folder = tmp_path_factory.mktemp("bn")
    original = datasets.has_network
    datasets.has_network = lambda *a, **k: False
    try:
        x, y = datasets.load_numpy("mnist", "train", DATA_DIR, limit=512)
        x_test, y_test = datasets.load_numpy("mnist", "test", DATA_DIR, LIMIT)
    finally:
        datasets.has_network = original
    keras.utils.set_random_seed(0)
    inputs = keras.Input((28, 28, 1))
    h = keras.layers.Flatten()(inputs)
    h = keras.layers.Dense(32, name="fc1")(h)
    h = keras.layers.BatchNormalization(momentum=0.5, name="bn1")(h)
    h = keras.layers.Activation("relu")(h)
    outputs = keras.layers.Dense(10, name="logits")(h)
    model = keras.Model(inputs, outputs)
    model.compile(
        "adam",
        keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    model.fit(x, y, epochs=1, batch_size=64, verbose=0)
    model.save(folder / "bn.keras")
    return folder, model, x[:100], x_test, y_test


def recalibrated_by_hand(model, x):
    layer = model.get_layer("bn1")
    seen = keras.Model(model.inputs, layer.input).predict(x, verbose=0)
    layer.moving_mean.assign(seen.astype("float64").mean(axis=0))
    layer.moving_variance.assign(seen.astype("float64").var(axis=0))
    return model


def test_sweep_recalibrates_on_training_examples(
    saved_bn, tmp_path, monkeypatch
):
    folder, model, x_train, x, y = saved_bn
    args = [
        "sweep",
        str(folder / "bn.keras"),
        "--data",
        "mnist",
        "--data-dir",
        DATA_DIR,
        "--test-limit",
        str(LIMIT),
        "--targeting",
        "unit",
        "--fractions",
        "0,0.5",
        "--recalibrate",
        "100",
        "--out",
        str(tmp_path),
        "--quiet",
    ]
    assert run_cli(args, monkeypatch) == 0
    with open(tmp_path / "sweep.csv", newline="") as f:
        table = list(csv.DictReader(f))
    monkeypatch.setattr(datasets, "has_network", lambda *a, **k: False)
    for row in table:
        fraction = float(row["prune_fraction"])
        pruned = prune(model, fraction, "unit")
        recalibrated_by_hand(pruned, x_train)
        assert float(row["accuracy_bn"]) == approx(
            accuracy(pruned, x, y), abs=1e-6
        )
    from keras_tdrop.experiments.sweep import sweep_files

    sweeps = sweep_files(
        {"bn": str(folder / "bn.keras")},
        "mnist",
        out_dir=str(tmp_path / "api"),
        fractions=(0.5,),
        data_dir=DATA_DIR,
        test_limit=LIMIT,
        recalibrate=100,
        verbose=0,
    )
    (row,) = sweeps["bn"]
    assert row["recalibrated"] is True
    pruned = recalibrated_by_hand(prune(model, 0.5), x_train)
    pruned.compile(
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    )
    assert row["loss"] == approx(
        pruned.evaluate(x, y, verbose=0, return_dict=True)["loss"], rel=1e-4
    )
    plain = sweep_files(
        {"bn": str(folder / "bn.keras")},
        "mnist",
        out_dir=str(tmp_path / "plain"),
        fractions=(0.5,),
        data_dir=DATA_DIR,
        test_limit=LIMIT,
        verbose=0,
    )
    assert plain["bn"][0]["recalibrated"] is False
    assert plain["bn"][0]["loss"] != approx(row["loss"], rel=1e-3)


def test_bad_recalibrate(saved_bn, tmp_path, monkeypatch, capsys):
    from keras_tdrop.experiments.sweep import sweep_files

    folder = saved_bn[0]
    with pytest.raises(SystemExit):
        run_cli(
            [
                "sweep",
                str(folder / "bn.keras"),
                "--data",
                "mnist",
                "--recalibrate",
                "-1",
            ],
            monkeypatch,
        )
    assert "--recalibrate: must be >= 0" in capsys.readouterr().err
    with pytest.raises(ValueError, match="`recalibrate` must be an int >= 0"):
        sweep_files(
            {"x": str(tmp_path / "missing.keras")},
            "mnist",
            out_dir=str(tmp_path / "out"),
            recalibrate=-5,
        )
    assert not (tmp_path / "out").exists()
