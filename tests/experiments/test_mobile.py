"""`keras-tdrop mobile`: every method from scratch on the smoke scale, the
comparison table, resuming, and bad input."""

import contextlib
import io
import json
import os
from pathlib import Path

import keras
import numpy as np
import pytest

from keras_tdrop.experiments import cli
from keras_tdrop.experiments import datasets
from keras_tdrop.experiments import mobile
from keras_tdrop.experiments import models
from keras_tdrop.experiments.mobile_compare import TABLE_COLUMNS
from keras_tdrop.experiments.mobile_runs import SCALES
from keras_tdrop.experiments.mobile_runs import narrow_network
from tests.tolerance import approx

REPO = Path(__file__).resolve().parents[2]
DATA_DIR = os.environ.get("TFDS_DATA_DIR") or str(
    REPO.parent / "shared" / "tensorflow_datasets"
)
METHODS = ["none", "targeted", "slimming", "narrow", "finetune", "triangular"]
TEST_LIMIT = SCALES["smoke"]["test_limit"]


def _run(out, **kwargs):
    original = datasets.has_network
    datasets.has_network = lambda *a, **k: False
    stdout = io.StringIO()
    try:
        with contextlib.redirect_stdout(stdout):
            table = mobile.run_mobile(
                out,
                methods=METHODS,
                seeds=[0],
                scale="smoke",
                fractions=(0.0, 0.5),
                widths=(0.5,),
                data_dir=DATA_DIR,
                verbose=1,
                **kwargs,
            )
    finally:
        datasets.has_network = original
    return table, stdout.getvalue()


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    out = tmp_path_factory.mktemp("mobile")
    table, printed = _run(str(out))
    return out, table, printed


def _rows(out, folder, name="results.json"):
    with open(out / folder / name) as f:
        return json.load(f)["rows"]


def test_every_method_writes_its_run_folder(smoke):
    out, _, _ = smoke
    for folder in ("none_s0", "targeted_s0", "slimming_s0", "narrow_w50_s0"):
        assert (out / folder / "model.keras").stat().st_size > 0
        assert (out / folder / "config.json").exists()
    # finetune re-uses the none run and writes its own rows beside it.
    assert (out / "none_s0" / "results_finetune.json").exists()
    assert (out / "none_s0" / "finetune_50.tflite").stat().st_size > 0
    for name in ("compare.txt", "compare.csv", "compare.png"):
        assert (out / "compare" / name).stat().st_size > 0


def test_rows_per_method(smoke):
    out, table, _ = smoke
    found = {(r["method"], r["fraction"]) for r in table}
    assert found == {
        ("none", 0.0),
        ("none", 0.5),
        ("targeted", 0.0),
        ("targeted", 0.5),
        ("slimming", 0.0),
        ("slimming", 0.5),
        ("narrow", 0.5),
        ("finetune", 0.5),
        ("triangular", 0.0),
        ("triangular", 0.5),
    }
    assert all(r["seeds"] == 1 for r in table)
    assert list(table[0]) == list(TABLE_COLUMNS)


def test_every_method_has_the_same_architecture_at_a_fraction(smoke):
    """Group pruning leaves the same channel counts whatever the method
    and ranking, and narrow is built with exactly those counts."""
    out, table, _ = smoke
    at_half = {r["method"]: r["macs"] for r in table if r["fraction"] == 0.5}
    assert len(set(at_half.values())) == 1
    dense = [r["macs"] for r in table if r["fraction"] == 0.0]
    assert len(set(dense)) == 1 and dense[0] > at_half["none"]
    params = {
        row["params"]
        for folder, name in (
            ("none_s0", "results.json"),
            ("targeted_s0", "results.json"),
            ("triangular_s0", "results.json"),
            ("narrow_w50_s0", "results.json"),
            ("none_s0", "results_finetune.json"),
        )
        for row in _rows(out, folder, name)
        if row["fraction"] == 0.5
    }
    assert len(params) == 1
    assert params == {narrow_network(0.5, 0).count_params()}


def test_shrunk_and_litert_match_masked(smoke):
    out, _, _ = smoke
    for folder in ("none_s0", "targeted_s0", "slimming_s0", "triangular_s0"):
        for row in _rows(out, folder):
            for key in ("accuracy_shrunk", "accuracy_tflite"):
                gap = abs(row[key] - row["accuracy_masked"]) * TEST_LIMIT
                assert gap <= 1, (folder, row)
            assert row["latency_ms"] > 0


def test_finetune_reports_its_cost(smoke):
    out, _, _ = smoke
    (row,) = _rows(out, "none_s0", "results_finetune.json")
    assert row["fraction"] == 0.5 and row["finetune_seconds"] > 0


def test_the_dense_row_is_measured_as_trained(smoke):
    out, _, _ = smoke
    for folder in ("none_s0", "targeted_s0"):
        dense = _rows(out, folder)[0]
        model = keras.saving.load_model(out / folder / "model.keras")
        x, y = datasets.load_numpy(
            "cifar10", "test", data_dir=DATA_DIR, limit=TEST_LIMIT
        )
        accuracy = np.mean(np.argmax(model.predict(x, verbose=0), axis=-1) == y)
        assert dense["accuracy_as_trained"] == approx(accuracy)


def test_triangular_is_cut_to_its_first_channels(smoke):
    """A network trained for any width is truncated (its first channels),
    not pruned by importance; every width is also measured before its
    statistics are recalibrated."""
    from keras_tdrop import truncate

    out, _, _ = smoke
    model = keras.saving.load_model(out / "triangular_s0" / "model.keras")
    x, y = datasets.load_numpy(
        "cifar10", "test", data_dir=DATA_DIR, limit=TEST_LIMIT
    )
    for row in _rows(out, "triangular_s0"):
        small = truncate(model, 1.0 - row["fraction"])
        assert small.count_params() == row["params"]
        accuracy = np.mean(np.argmax(small.predict(x, verbose=0), axis=-1) == y)
        assert row["accuracy_as_trained"] == approx(accuracy)


def test_a_second_run_resumes_without_training(smoke):
    out, table, _ = smoke
    stamp = os.path.getmtime(out / "targeted_s0" / "model.keras")
    again, printed = _run(str(out))
    assert "Training" not in printed
    assert os.path.getmtime(out / "targeted_s0" / "model.keras") == stamp
    assert again == table


def test_other_settings_in_a_run_folder_are_refused(smoke):
    out, _, _ = smoke
    with pytest.raises(ValueError, match=r"differing: \['scale'\]"):
        mobile.run_mobile(
            str(out),
            methods=["targeted"],
            scale="search",
            data_dir=DATA_DIR,
            verbose=0,
        )


def test_other_method_settings_get_their_own_folder_and_label():
    from keras_tdrop.experiments.mobile_runs import method_label
    from keras_tdrop.experiments.mobile_runs import run_name

    assert method_label("targeted", {"rate": 0.5, "target_rate": 0.5}) == (
        "targeted"
    )
    params = {"rate": 0.75, "ramp": (0.1, 0.3)}
    assert method_label("targeted", params) == (
        "targeted(ramp=0.1-0.3,rate=0.75)"
    )
    assert run_name("targeted", 2, None, params) == (
        "targeted(ramp=0.1-0.3,rate=0.75)_s2"
    )
    assert run_name("narrow", 1, 0.25) == "narrow_w25_s1"


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"methods": ["none", "pruned"]}, "method=.none,pruned"),
        ({"methods": []}, "method"),
        ({"fractions": (0.0, 1.5)}, "fractions"),
        ({"widths": (0.0,)}, "widths"),
        ({"seeds": [-1]}, "seeds"),
        ({"scale": "huge"}, "scale='huge'"),
        ({"params": {"targeted": {"alpha": 0.5}}}, "params"),
        ({"params": {"targeted": {"clean_steps": 1.0}}}, "clean_steps=1.0"),
        ({"params": {"targeted": {"rate": 1.5}}}, "rate=1.5"),
        ({"params": {"slimming": {"l1": -1.0}}}, "l1=-1.0"),
        ({"params": {"triangular": {"min_width": 0.0}}}, "min_width=0.0"),
        ({"params": {"triangular": {"mode": "wide"}}}, "mode='wide'"),
    ],
)
def test_bad_input_is_refused_before_any_work(tmp_path, kwargs, match):
    out = tmp_path / "never"
    with pytest.raises(ValueError, match=match):
        mobile.run_mobile(str(out), **kwargs)
    assert not out.exists()


def test_cli_unknown_method_names_it(capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["mobile", "--method", "none,pruned"])
    assert exit_info.value.code == 2
    assert "method='none,pruned'" in capsys.readouterr().err


def test_cli_passes_arguments(monkeypatch):
    seen = {}
    monkeypatch.setattr(
        "keras_tdrop.experiments.mobile.run_mobile",
        lambda out, **kwargs: seen.update(kwargs, out=out),
    )
    status = cli.main(
        [
            "mobile",
            "--method",
            "none,targeted,narrow",
            "--seeds",
            "0,1,2",
            "--scale",
            "converged",
            "--fractions",
            "0,0.25",
            "--widths",
            "0.25,0.5",
            "--rate",
            "0.25",
            "--ramp",
            "0.2,0.4",
            "--quiet",
            "--data-dir",
            "/data",
        ]
    )
    assert status == 0
    assert seen["out"] == "mobile_out"
    assert seen["methods"] == ["none", "targeted", "narrow"]
    assert seen["seeds"] == [0, 1, 2]
    assert seen["scale"] == "converged"
    assert seen["fractions"] == (0.0, 0.25)
    assert seen["widths"] == (0.25, 0.5)
    assert seen["params"] == {"targeted": {"rate": 0.25, "ramp": (0.2, 0.4)}}
    assert seen["data_dir"] == "/data"
    assert seen["verbose"] == 0


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
