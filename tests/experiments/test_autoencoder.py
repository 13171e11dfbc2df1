import contextlib
import csv
import io
import os
from pathlib import Path

import keras
import numpy as np
import pytest

from keras_tdrop import TriangularDropout
from keras_tdrop import set_width
from keras_tdrop.experiments import autoencoder
from keras_tdrop.experiments import cli
from keras_tdrop.experiments import cli_demos
from keras_tdrop.experiments import datasets
from keras_tdrop.experiments import models
from tests.tolerance import approx

REPO = Path(__file__).resolve().parents[2]
DATA_DIR = os.environ.get("TFDS_DATA_DIR") or str(
    REPO.parent / "shared" / "tensorflow_datasets"
)
LATENT = 4
FIXED = (2, 4)
TEST_LIMIT = 40


def conv_params(kernel, channels_in, filters):
    return kernel * kernel * channels_in * filters + filters


@pytest.mark.parametrize("latent_dim,filters", [(32, 32), (3, 8)])
def test_conv_autoencoder_architecture(latent_dim, filters):
    model = models.conv_autoencoder(latent_dim, filters=filters)
    flat = 12 * 12 * filters  # 28 -9-> 20 -7-> 14 -3-> 12
    expected = (
        conv_params(9, 1, filters)
        + conv_params(7, filters, filters)
        + conv_params(3, filters, filters)
        + flat * latent_dim
        + latent_dim
        + latent_dim * flat
        + flat
        + conv_params(3, filters, filters)
        + conv_params(7, filters, filters)
        + conv_params(9, filters, filters)
        + conv_params(3, filters, 1)
    )
    trainable = sum(int(np.prod(w.shape)) for w in model.trainable_weights)
    assert trainable == expected
    assert model.output_shape == (None, 28, 28, 1)
    assert isinstance(model.get_layer("latent_dropout"), TriangularDropout)
    assert model.get_layer("latent").activation is keras.activations.linear
    plain = models.conv_autoencoder(
        latent_dim, triangular=False, filters=filters
    )
    assert plain.count_params() == expected
    assert "latent_dropout" not in [layer.name for layer in plain.layers]


def test_paper_default_parameter_count():
    trainable = models.conv_autoencoder().trainable_weights
    assert sum(int(np.prod(w.shape)) for w in trainable) == 504_353


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """One tiny experiment, shared by the tests below."""
    out = tmp_path_factory.mktemp("autoencoder")
    original = datasets.has_network
    datasets.has_network = lambda *a, **k: False
    stdout = io.StringIO()
    try:
        with contextlib.redirect_stdout(stdout):
            rows = autoencoder.run_autoencoder(
                out,
                data_dir=DATA_DIR,
                latent_dim=LATENT,
                fixed_widths=FIXED,
                epochs=1,
                batch_size=32,
                train_limit=64,
                test_limit=TEST_LIMIT,
                filters=4,
                examples=3,
                verbose=2,
            )
    finally:
        datasets.has_network = original
    return out, rows, stdout.getvalue()


def test_rows(tiny_run):
    _, rows, _ = tiny_run
    assert [r["width"] for r in rows] == list(range(1, LATENT + 1))
    for row in rows:
        assert (row["loss_fixed"] is None) == (row["width"] not in FIXED)
        for key in ("loss_triangular", "loss_truncated"):
            assert 0.0 < row[key] < 1.0
    # The plain model is the fixed-width model at full width, and masking
    # nothing leaves it unchanged.
    assert rows[-1]["loss_truncated"] == approx(
        rows[-1]["loss_fixed"], rel=1e-6
    )


def bce(images, reconstructions):
    r = np.clip(reconstructions, 1e-7, 1 - 1e-7)
    return float(-np.mean(images * np.log(r) + (1 - images) * np.log(1 - r)))


@pytest.mark.parametrize("width", [1, 3])
def test_losses_equal_numpy_bce_of_saved_models(tiny_run, width):
    out, rows, _ = tiny_run
    x_test, _ = datasets.load_numpy(
        "mnist", "test", data_dir=DATA_DIR, limit=TEST_LIMIT
    )
    triangular = keras.saving.load_model(out / "triangular.keras")
    standard = keras.saving.load_model(out / "standard.keras")
    set_width(triangular, width)
    got = bce(x_test, triangular.predict(x_test, verbose=0))
    assert got == approx(rows[width - 1]["loss_triangular"], rel=1e-4)
    # Plain truncation by hand: zero the code units >= width.
    encoder = keras.Model(standard.input, standard.get_layer("latent").output)
    code = encoder.predict(x_test, verbose=0)
    code[:, width:] = 0.0
    x = code
    for name in (
        "dec_dense",
        "unflatten",
        "dec_deconv1",
        "dec_deconv2",
        "dec_deconv3",
        "reconstruction",
    ):
        x = standard.get_layer(name)(x)
    got = bce(x_test, keras.ops.convert_to_numpy(x))
    assert got == approx(rows[width - 1]["loss_truncated"], rel=1e-4)


def test_csv(tiny_run):
    out, rows, _ = tiny_run
    with open(out / "autoencoder.csv", newline="") as f:
        table = list(csv.DictReader(f))
    assert tuple(table[0].keys()) == autoencoder.COLUMNS
    assert len(table) == LATENT
    for written, row in zip(table, rows):
        assert int(written["width"]) == row["width"]
        for key in ("loss_triangular", "loss_truncated"):
            assert float(written[key]) == approx(row[key], abs=1e-6)
        if row["loss_fixed"] is None:
            assert written["loss_fixed"] == ""
        else:
            assert float(written["loss_fixed"]) == approx(
                row["loss_fixed"], abs=1e-6
            )


@pytest.mark.parametrize("name", ["autoencoder.png", "reconstructions.png"])
def test_pngs(tiny_run, name):
    out, _, _ = tiny_run
    data = (out / name).read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    assert len(data) > 5000


def test_printed_table_and_progress(tiny_run):
    _, rows, printed = tiny_run
    assert "[1/3] Training Triangular Dropout, z=4" in printed
    assert "[3/3] Training standard, z=2" in printed
    for w in range(1, LATENT + 1):
        assert f"width {w:>3}: triangular" in printed
    assert "width  triangular   truncated       fixed" in printed
    last = rows[-1]
    assert (
        f"    4  {last['loss_triangular']:>10.4f}  "
        f"{last['loss_truncated']:>10.4f}  {last['loss_fixed']:>10.4f}"
    ) in printed


def test_summary_line(tiny_run):
    _, rows, printed = tiny_run
    r = rows[1]  # width 2, the only fixed width below the full one
    triangular, truncated = autoencoder.summarize(rows)
    assert triangular == approx(r["loss_triangular"] / r["loss_fixed"] - 1)
    assert truncated == approx(r["loss_truncated"] / r["loss_fixed"] - 1)
    assert f"triangular {triangular:+.1%}, plainly truncated" in printed


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"fixed_widths": (2, 64)}, r"fixed_widths=\(2, 64\)"),
        ({"fixed_widths": ()}, r"fixed_widths=\(\)"),
        ({"fixed_widths": (2, 2)}, r"fixed_widths=\(2, 2\)"),
        ({"mode": "block"}, "mode='block'"),
    ],
)
def test_bad_arguments(tmp_path, kwargs, match):
    with pytest.raises(ValueError, match=match):
        autoencoder.run_autoencoder(tmp_path, **kwargs)
    assert not list(tmp_path.iterdir())


def test_plateau_schedule():
    model = keras.Sequential([keras.Input((1,)), keras.layers.Dense(1)])
    model.compile(keras.optimizers.Adam(1.0), "mse")
    schedule = autoencoder.PlateauSchedule(patience=2, decreases=2)
    schedule.set_model(model)
    schedule.on_train_begin()
    lr = model.optimizer.learning_rate
    # 1.0 -> 0.9 is a 10% fall (resets the wait); 0.89 is under 2%.
    for loss, expected_lr in [(1.0, 1.0), (0.9, 1.0), (0.89, 1.0)]:
        schedule.on_epoch_end(0, {"loss": loss})
        assert float(lr.numpy()) == approx(expected_lr)
    schedule.on_epoch_end(0, {"loss": 0.885})
    assert float(lr.numpy()) == approx(0.1)
    assert not model.stop_training
    for loss in (0.884, 0.883):
        schedule.on_epoch_end(0, {"loss": loss})
    assert model.stop_training
    assert float(lr.numpy()) == approx(0.1)


def test_cli_arguments():
    args = cli.build_parser().parse_args(
        ["autoencoder", "--fixed-widths", "2,8", "--train-limit", "all"]
    )
    assert args.fixed_widths == (2, 8)
    assert args.train_limit is None
    assert args.test_limit == 300 and args.epochs == 3
    assert args.filters == 16 and args.batch_size == 64
    assert args.run is cli_demos._run_autoencoder
    with pytest.raises(SystemExit):
        with contextlib.redirect_stderr(io.StringIO()):
            cli.build_parser().parse_args(
                ["autoencoder", "--fixed-widths", "2,x"]
            )
