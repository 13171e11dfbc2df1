import contextlib
import csv
import io
import os
from pathlib import Path

import keras
import pytest

from keras_tdrop.experiments import cli
from keras_tdrop.experiments import datasets
from keras_tdrop.experiments import mobile
from keras_tdrop.experiments import models

REPO = Path(__file__).resolve().parents[2]
DATA_DIR = os.environ.get("TFDS_DATA_DIR") or str(
    REPO.parent / "shared" / "tensorflow_datasets"
)
TEST_LIMIT = 128


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """One tiny run (4 steps of training, fractions 0 and 0.5)."""
    out = tmp_path_factory.mktemp("mobile")
    original = datasets.has_network
    datasets.has_network = lambda *a, **k: False
    stdout = io.StringIO()
    try:
        with contextlib.redirect_stdout(stdout):
            rows = mobile.run_mobile(
                out,
                data_dir=DATA_DIR,
                epochs=1,
                batch_size=64,
                train_limit=256,
                test_limit=TEST_LIMIT,
                fractions=(0.0, 0.5),
                latency_repeats=20,
                recalibrate=128,
                verbose=2,
            )
    finally:
        datasets.has_network = original
    return out, rows, stdout.getvalue()


def test_files(tiny_run):
    out, _, _ = tiny_run
    for name in ("mobile.csv", "mobile.png", "mobile_0.tflite"):
        assert (out / name).stat().st_size > 0
    assert (out / "mobile_50.tflite").stat().st_size > 0


def test_csv_rows(tiny_run):
    out, rows, _ = tiny_run
    with open(out / "mobile.csv", newline="") as f:
        table = list(csv.DictReader(f))
    assert len(table) == 2
    assert list(table[0]) == list(mobile.COLUMNS)
    assert [float(r["prune_fraction"]) for r in table] == [0.0, 0.5]
    assert [int(r["params"]) for r in table] == [r["params"] for r in rows]


def test_sizes_decrease(tiny_run):
    _, rows, _ = tiny_run
    dense, pruned = rows
    assert dense["params"] == models.mobile_cnn().count_params()
    for key in ("params", "macs", "tflite_bytes"):
        assert pruned[key] < dense[key]
    assert dense["speedup"] == 1.0
    assert pruned["latency_ms"] > 0


def test_shrunk_matches_masked(tiny_run):
    _, rows, _ = tiny_run
    for row in rows:
        masked = row["accuracy_masked"] * TEST_LIMIT
        assert masked == pytest.approx(round(masked), abs=1e-6)
        for key in ("accuracy_shrunk", "accuracy_tflite"):
            assert abs(row[key] - row["accuracy_masked"]) * TEST_LIMIT <= 1


def test_printed(tiny_run):
    _, _, printed = tiny_run
    assert "prune_fraction  params" in printed
    assert "50%: " in printed
    assert mobile.BN_NOTE.format(count=128) in printed


def test_mobile_cnn_structure():
    model = models.mobile_cnn()
    assert model.count_params() == 133_898
    names = [layer.name for layer in model.layers]
    assert [n for n in names if n.endswith("_add")] == [
        "b3_add",
        "b5_add",
        "b7_add",
    ]
    assert "b7_se_excite" in names
    assert isinstance(
        model.get_layer("b2_depthwise"), keras.layers.DepthwiseConv2D
    )
    assert "b1_expand" not in names
    with pytest.raises(ValueError, match="num_classes"):
        models.mobile_cnn(num_classes=0)


def test_cli_passes_arguments(monkeypatch):
    seen = {}
    monkeypatch.setattr(
        "keras_tdrop.experiments.mobile.run_mobile",
        lambda **kwargs: seen.update(kwargs),
    )
    status = cli.main(
        [
            "mobile",
            "--fractions",
            "0,0.25",
            "--epochs",
            "2",
            "--train-limit",
            "512",
            "--quiet",
            "--data-dir",
            "/data",
        ]
    )
    assert status == 0
    assert seen["fractions"] == (0.0, 0.25)
    assert seen["epochs"] == 2
    assert seen["train_limit"] == 512
    assert seen["test_limit"] == 2000
    assert seen["batch_size"] == 64
    assert seen["out_dir"] == "mobile_out"
    assert seen["data_dir"] == "/data"
    assert seen["latency_repeats"] == 500
    assert seen["verbose"] == 0
