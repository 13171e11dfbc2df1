import csv
import os
import stat

import keras
import numpy as np
import pytest
from ai_edge_litert.interpreter import Interpreter

from keras_tdrop import TriangularDropout
from keras_tdrop import set_width
from keras_tdrop import truncate
from keras_tdrop.experiments import models
from keras_tdrop.export.widths import export_widths
from keras_tdrop.export.widths import format_width_table
from keras_tdrop.export.widths import write_width_csv
from tests.tolerance import approx
from tests.tolerance import assert_close

WIDTHS = (2, 5, 10)
INPUTS, UNITS, CLASSES = 20, 10, 4


def head(seed=0):
    keras.utils.set_random_seed(seed)
    model = models.mlp_head(
        input_dim=INPUTS, units=(UNITS, UNITS), num_classes=CLASSES
    )
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        if isinstance(layer, keras.layers.Dense):
            layer.bias.assign(rng.normal(0, 0.5, layer.bias.shape))
    return model


def head_params(w):
    return (INPUTS + 1) * w + (w + 1) * w + (w + 1) * CLASSES


def data(n=64, seed=1):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, INPUTS)).astype("float32")
    return x, rng.integers(0, CLASSES, n)


def run_file(path, x):
    """An independent LiteRT run of a written file."""
    interpreter = Interpreter(model_path=path)
    (inp,) = interpreter.get_input_details()
    interpreter.resize_tensor_input(inp["index"], x.shape)
    interpreter.allocate_tensors()
    interpreter.set_tensor(inp["index"], x)
    interpreter.invoke()
    (out,) = interpreter.get_output_details()
    return interpreter.get_tensor(out["index"])


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    out = tmp_path_factory.mktemp("widths")
    model = head()
    x, y = data()
    rows = export_widths(
        model,
        WIDTHS,
        out,
        data=(x, y),
        metric=keras.metrics.SparseCategoricalAccuracy(name="accuracy"),
        name="head",
        repeats=5,
        verbose=0,
    )
    return out, model, rows


def test_rows_and_files(exported):
    out, _, rows = exported
    assert [r["width"] for r in rows] == list(WIDTHS)
    for row in rows:
        assert row["params"] == head_params(row["width"])
        assert row["path"] == os.path.join(out, f"head_w{row['width']}.tflite")
        assert os.path.getsize(row["path"]) == row["bytes"]
        assert row["latency_ms"] > 0
        assert row["max_abs_diff"] < 1e-4
        assert row["recalibrated"] is False
    sizes = [r["bytes"] for r in rows]
    assert sizes == sorted(sizes) and sizes[0] < sizes[-1]
    assert sorted(os.listdir(out)) == sorted(
        [f"head_w{w}.tflite" for w in WIDTHS] + ["head_widths.csv"]
    )


@pytest.mark.parametrize("width", WIDTHS)
def test_litert_outputs_equal_keras_masked_model(exported, width):
    _, model, rows = exported
    x, _ = data(32, seed=5)
    got = run_file(rows[WIDTHS.index(width)]["path"], x)
    set_width(model, width)
    try:
        expected = model.predict(x, verbose=0)
    finally:
        set_width(model, None)
    assert_close(got, expected, atol=1e-5, rtol=1e-5)


def test_metric_is_computed_on_the_file(exported):
    _, model, rows = exported
    x, y = data()
    for row in rows:
        set_width(model, row["width"])
        predicted = np.argmax(model.predict(x, verbose=0), axis=-1)
        assert row["accuracy"] == approx(np.mean(predicted == y))
    set_width(model, None)


def test_model_left_unchanged(exported):
    _, model, _ = exported
    assert [layer.width for layer in model.layers[2:5:2]] == [None, None]
    assert len(model.layers) == 6


def test_csv_and_table(exported):
    out, _, rows = exported
    with open(out / "head_widths.csv", newline="") as f:
        table = list(csv.DictReader(f))
    assert list(table[0]) == [
        "width",
        "params",
        "macs",
        "bytes",
        "latency_ms",
        "max_abs_diff",
        "accuracy",
        "recalibrated",
        "path",
    ]
    for written, row in zip(table, rows):
        assert int(written["params"]) == row["params"]
        w = row["width"]
        assert row["macs"] == INPUTS * w + w * w + w * CLASSES
        assert float(written["accuracy"]) == row["accuracy"]
    text = format_width_table(rows)
    lines = text.splitlines()
    assert lines[0].split() == [
        "width",
        "params",
        "MACs",
        "bytes",
        "ms",
        "max|diff|",
        "accuracy",
    ]
    assert len(lines) == 2 + len(WIDTHS)
    assert lines[2].split()[:4] == [
        "2",
        f"{head_params(2):,}",
        f"{rows[0]['macs']:,}",
        f"{rows[0]['bytes']:,}",
    ]


def test_callable_metric_and_compiled_loss(tmp_path):
    model = head(seed=3)
    x, _ = data(16)
    target = np.random.default_rng(2).normal(size=(16, CLASSES))
    model.compile(loss="mse")
    rows = export_widths(model, [3], tmp_path, data=(x, target), verbose=0)
    set_width(model, 3)
    expected = np.mean((model.predict(x, verbose=0) - target) ** 2)
    assert rows[0]["mse"] == approx(expected, rel=1e-4)
    # Not timed unless `repeats` is given: no latency, a dash in the table.
    assert rows[0]["latency_ms"] is None
    assert format_width_table(rows).splitlines()[2].split()[4] == "-"
    with open(tmp_path / f"{model.name}_widths.csv", newline="") as f:
        assert next(csv.DictReader(f))["latency_ms"] == ""


def test_csv_has_open_permissions_and_umask_is_kept(tmp_path):
    rows = [{"width": 2, "params": 5, "latency_ms": None}]
    old = os.umask(0o027)
    try:
        with open(tmp_path / "plain.csv", "w") as f:
            f.write("x")
        write_width_csv(rows, tmp_path / "rows.csv")
        assert os.umask(0o027) == 0o027
    finally:
        os.umask(old)
    mode = stat.S_IMODE(os.stat(tmp_path / "rows.csv").st_mode)
    assert mode == stat.S_IMODE(os.stat(tmp_path / "plain.csv").st_mode)
    assert mode == 0o640
    assert sorted(os.listdir(tmp_path)) == ["plain.csv", "rows.csv"]
    assert (tmp_path / "rows.csv").read_text().splitlines() == [
        "width,params,latency_ms",
        "2,5,",
    ]


@pytest.mark.parametrize(
    "widths,match",
    [([], r"widths=\[\]"), ([2, 0], r"widths=\[2, 0\]"), ([3, 11], "11")],
)
def test_bad_widths_write_nothing(tmp_path, widths, match):
    out = tmp_path / "out"
    with pytest.raises(ValueError, match=match):
        export_widths(head(), widths, out, verbose=0)
    assert not out.exists()


def test_data_without_metric(tmp_path):
    with pytest.raises(ValueError, match="metric=None"):
        export_widths(head(), [2], tmp_path, data=data(), verbose=0)
    with pytest.raises(ValueError, match="pair"):
        export_widths(head(), [2], tmp_path, data=data()[0], verbose=0)
    assert not list(tmp_path.iterdir())


def bn_head(seed=0):
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((INPUTS,))
    x = inputs
    for i in (1, 2):
        x = keras.layers.Dense(UNITS, name=f"fc{i}")(x)
        x = keras.layers.BatchNormalization(name=f"bn{i}")(x)
        x = keras.layers.Activation("relu")(x)
        x = TriangularDropout(name=f"tri{i}")(x)
    outputs = keras.layers.Dense(CLASSES, name="logits")(x)
    return keras.Model(inputs, outputs, name="bn_head")


def test_per_width_recalibration(tmp_path):
    model = bn_head()
    calibration, _ = data(48, seed=7)
    x, _ = data(32, seed=5)
    rows = export_widths(
        model, [3, 7], tmp_path, recalibrate=calibration, verbose=0
    )
    for row in rows:
        assert row["recalibrated"] is True
        width = row["width"]
        # Each width normalized by its own statistics over the data.
        small = truncate(model, width)
        for name in ("bn1", "bn2"):
            layer = small.get_layer(name)
            probe = keras.Model(small.inputs, layer.input)
            seen = probe.predict(calibration, verbose=0).astype("float64")
            layer.moving_mean.assign(seen.mean(axis=0))
            layer.moving_variance.assign(seen.var(axis=0))
        assert_close(
            run_file(row["path"], x),
            small.predict(x, verbose=0),
            atol=1e-4,
            rtol=1e-4,
        )
        set_width(model, width)
        masked = model.predict(x, verbose=0)
        set_width(model, None)
        assert np.abs(run_file(row["path"], x) - masked).max() > 1e-2
    with open(tmp_path / "bn_head_widths.csv", newline="") as f:
        assert [r["recalibrated"] for r in csv.DictReader(f)] == [
            "True",
            "True",
        ]


def test_bad_recalibrate_data_writes_nothing(tmp_path):
    out = tmp_path / "out"
    with pytest.raises(ValueError, match="`recalibrate`: `data` is empty"):
        export_widths(
            bn_head(), [2], out, recalibrate=np.zeros((0, INPUTS)), verbose=0
        )
    assert not out.exists()
