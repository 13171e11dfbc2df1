import csv
import json
import os
from pathlib import Path

import keras
import numpy as np
import pytest

from keras_tdrop import schedules
from keras_tdrop.experiments import models
from keras_tdrop.experiments import train as train_lib
from keras_tdrop.experiments.analyze import analyze
from keras_tdrop.kernels import iter_layers
from tests.tolerance import approx
from tests.tolerance import assert_close

REPO = Path(__file__).resolve().parents[2]
DATA_DIR = os.environ.get("TFDS_DATA_DIR") or str(
    REPO.parent / "shared" / "tensorflow_datasets"
)
TINY = dict(
    model="toy_mlp",
    data="mnist",
    epochs=2,
    batch_size=16,
    train_limit=48,
    test_limit=64,
    fractions=(0.0, 0.5),
    data_dir=DATA_DIR,
    verbose=0,
)


class Interrupt(Exception):
    pass


class StopAfterFirstEpoch(keras.callbacks.Callback):
    def on_epoch_end(self, epoch, logs=None):
        raise Interrupt()


def read_csv(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_train_interrupt_resume_sweep_and_analyze(tmp_path):
    run = tmp_path / "run"
    with pytest.raises(Interrupt):
        train_lib.train(
            "ramping_weight",
            str(run),
            callbacks=[StopAfterFirstEpoch()],
            **TINY,
        )
    config = json.loads((run / "config.json").read_text())
    assert config["seed"] == 0
    assert config["steps_per_epoch"] == 3 and config["planned_steps"] == 6
    assert config["ramp"]["ramp_steps"] == [1, 2]  # 20k/40k of 100k, x6
    assert config["recipe"]["learning_rate"] == 0.4
    assert config["recipe"]["augment"] is False  # MNIST: no crops/flips
    assert (run / "backup").is_dir()
    assert len(read_csv(run / "history.csv")) == 1
    assert not (run / "model.keras").exists()

    results = train_lib.train("ramping_weight", str(run), **TINY)
    # Resumed at step 3 (not 0): the ramp continues where it was.
    ramp = read_csv(run / "ramp.csv")
    assert [int(r["step"]) for r in ramp] == [0, 1, 2, 3, 4, 5]
    for row in ramp:
        alpha, gamma = schedules.piecewise(int(row["step"]), 1, 2)
        assert float(row["alpha"]) == approx(0.99 * alpha, abs=1e-6)
        assert float(row["gamma"]) == approx(0.99 * gamma, abs=1e-6)
    history = read_csv(run / "history.csv")
    assert [int(r["epoch"]) for r in history] == [0, 1]
    assert float(history[1]["td_target_rate"]) == approx(0.99)
    assert not (run / "backup").exists()  # removed once training ends
    if train_lib.has_tensorboard():
        assert any((run / "logs" / "ramp").iterdir())

    plain = keras.saving.load_model(run / "model.keras")
    assert all(
        type(layer).__module__.startswith("keras.")
        for layer in iter_layers(plain)
    )
    for targeting in ("weight", "unit"):
        rows = read_csv(run / f"sweep_{targeting}.csv")
        assert [float(r["fraction"]) for r in rows] == [0.0, 0.5]
        assert float(rows[0]["accuracy"]) == approx(results["test_accuracy"])
        assert results["sweeps"][targeting][1]["accuracy"] == approx(
            float(rows[1]["accuracy"]), abs=1e-6
        )
    # Saved as evaluated, the targeted floor(0.99 * 784) = 776 weights per
    # column pruned: pruning 50% more removes only zeros.
    for row in results["sweeps"]["weight"]:
        assert row["sparsity"] == approx(776 / 784)
    assert "dense_test_accuracy" in results
    assert (run / "sweep.png").stat().st_size > 1000
    assert json.loads((run / "results.json").read_text()) == results

    # A finished run is reported, not retrained.
    again = train_lib.train("ramping_weight", str(run), **TINY)
    assert again == results
    assert json.loads((run / "config.json").read_text()) == config
    # Other fractions sweep the trained model again, without training.
    resweep = train_lib.train(
        "ramping_weight", str(run), **{**TINY, "fractions": (0.0, 0.9)}
    )
    assert [r["fraction"] for r in resweep["sweeps"]["unit"]] == [0.0, 0.9]
    assert resweep["test_accuracy"] == results["test_accuracy"]
    assert len(read_csv(run / "history.csv")) == 2
    assert len(read_csv(run / "sweep_weight.csv")) == 2
    # Other settings in the same folder are refused.
    with pytest.raises(ValueError, match=r"differing: \[.*'recipe'"):
        train_lib.train("ramping_weight", str(run), **{**TINY, "epochs": 3})

    rows = analyze(
        [str(run)],
        fraction=0.5,
        out=str(tmp_path / "t1"),
        block_size=6,
        data_dir=DATA_DIR,
        verbose=0,
    )
    (row,) = rows
    assert row["pruned_accuracy"] == approx(
        results["sweeps"]["weight"][1]["accuracy"], abs=1e-6
    )
    assert row["accuracy"] == approx(results["test_accuracy"])
    assert row["estimate"] == approx(
        abs(row["gradient_term"] + row["hessian_term"])
    )
    assert (tmp_path / "t1" / "figure1.png").exists()
    assert read_csv(tmp_path / "t1" / "table1.csv")[0]["run"] == (
        "ramping_weight"
    )


def test_train_random_prune(tmp_path):
    experiment = "random_prune_weight_0.75"
    results = train_lib.train(experiment, str(tmp_path / "run"), **TINY)
    plain = keras.saving.load_model(tmp_path / "run" / "model.keras")
    kernel = plain.get_layer("hidden").kernel.numpy()
    # floor(0.75 * 784) = 588 zeros in every column, folded in.
    assert (kernel == 0).sum(axis=0).tolist() == [588] * 10
    # Pruning at 50% removes weights that are already zero: no change.
    sweep = results["sweeps"]["weight"]
    assert sweep[1]["accuracy"] == approx(sweep[0]["accuracy"])
    assert not (tmp_path / "run" / "ramp.csv").exists()  # nothing targeted


def test_train_ramped_run_is_saved_and_swept_pruned(tmp_path):
    experiment = "ramping_weight_0.75"
    results = train_lib.train(
        experiment,
        str(tmp_path / "run"),
        **{**TINY, "fractions": (0.0, 0.5, 0.75, 0.9)},
    )
    plain = keras.saving.load_model(tmp_path / "run" / "model.keras")
    kernel = plain.get_layer("hidden").kernel.numpy()
    # The ramp ends at gamma 0.75 (6 steps, ramp 1/1 steps scaled): the
    # saved model is the one evaluated, floor(0.75 * 784) = 588 zeros in
    # every column.
    assert (kernel == 0).sum(axis=0).tolist() == [588] * 10
    sweep = results["sweeps"]["weight"]
    # Sparsity counts the zeros it was saved with (hidden: 7,840 of the
    # 7,840 prunable weights; the logits are not pruned).
    assert [r["sparsity"] for r in sweep[:3]] == [0.75, 0.75, 0.75]
    assert sweep[3]["sparsity"] == approx(int(0.9 * 784) / 784)
    assert sweep[0]["accuracy"] == sweep[1]["accuracy"] == sweep[2]["accuracy"]
    assert results["test_accuracy"] == approx(sweep[0]["accuracy"])
    # The dense weights' accuracy is kept beside it.
    assert 0.0 <= results["dense_test_accuracy"] <= 1.0
    with open(tmp_path / "run" / "dense.json") as f:
        assert json.load(f) == {
            "dense_test_accuracy": results["dense_test_accuracy"]
        }


def test_compile_model_recipe():
    config = train_lib.resolve_config(
        "none", model="resnet8", epochs=10, batch_size=100, train_limit=1000
    )
    model = train_lib.compile_model(models.toy_mlp(), config)
    optimizer = model.optimizer
    assert optimizer.momentum == 0.9
    assert optimizer.global_clipnorm == 1.0
    schedule = optimizer._learning_rate
    assert config["lr_boundaries_steps"] == [40, 60, 80]
    got = [float(schedule(s)) for s in (0, 40, 41, 61, 81)]
    assert_close(got, [0.4, 0.4, 0.04, 0.004, 0.0004], 1e-6)


def test_cosine_schedule_with_warmup():
    config = train_lib.resolve_config(
        "none",
        model="resnet8",
        epochs=10,
        batch_size=100,
        train_limit=1000,
        lr_schedule="cosine",
        lr_warmup=0.1,
    )
    assert config["planned_steps"] == 100
    schedule = train_lib.learning_rate(config)
    got = [float(schedule(s)) for s in (0, 5, 10, 55, 100)]
    # Linear 0 -> 0.4 over 10 steps, then 0.4 * (1 + cos(pi * t / 90)) / 2.
    expected = [0.0, 0.2, 0.4, 0.2, 0.0]
    assert_close(got, expected, atol=1e-6)
    plain = train_lib.resolve_config(
        "none", model="resnet8", epochs=1, lr_schedule="cosine"
    )
    assert float(train_lib.learning_rate(plain)(0)) == approx(0.4)


def test_add_weight_decay_is_half_sum_of_squares_plus_l1():
    model = models.toy_mlp()
    model.get_layer("hidden").kernel.regularizer = keras.regularizers.L1(0.1)
    train_lib.add_weight_decay(model, 2e-4)
    hidden = model.get_layer("hidden").kernel.numpy().astype("float64")
    logits = model.get_layer("logits").kernel.numpy().astype("float64")
    expected = (
        2e-4 * ((hidden**2).sum() + (logits**2).sum()) / 2
        + 0.1 * np.abs(hidden).sum()
    )
    got = float(sum(np.asarray(loss) for loss in model.losses))
    assert_close(got, expected, rtol=1e-5)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"model": "vgg"}, "Received: model='vgg'"),
        ({"model": "resnet10"}, "Received: depth=10"),
        ({"model": "toy_mlp", "width": 2.0}, "Received: width=2.0"),
        ({"data": "svhn"}, "Received: data='svhn'"),
        ({"epochs": 0}, "Received: epochs=0"),
        ({"train_limit": 0}, "Received: limit=0"),
        ({"momentum_x": 1}, "Unknown recipe settings \\['momentum_x'\\]"),
        ({"fractions": (2.0,)}, "Received: fractions="),
        ({"lr_schedule": "linear"}, "Received: lr_schedule='linear'"),
        ({"lr_warmup": 1.0}, "Received: lr_warmup=1.0"),
    ],
)
def test_resolve_config_bad_input(kwargs, match):
    with pytest.raises(ValueError, match=match):
        train_lib.resolve_config("none", **kwargs)


BN_TINY = dict(
    model="resnet8",
    width=0.25,
    data="cifar10",
    epochs=1,
    batch_size=16,
    train_limit=48,
    test_limit=64,
    fractions=(0.0, 0.5),
    data_dir=DATA_DIR,
    verbose=0,
)


def standardized(images):
    """tf.image.per_image_standardization, transcribed in numpy."""
    images = np.asarray(images, "float64")
    axes = (1, 2, 3)
    mean = images.mean(axis=axes, keepdims=True)
    floor = 1.0 / np.sqrt(np.prod(images.shape[1:]))
    std = np.maximum(images.std(axis=axes, keepdims=True), floor)
    return ((images - mean) / std).astype("float32")


def set_statistics_from_inputs(model, x):
    """Each BatchNorm in turn (earlier ones already set) gets the mean and
    biased variance of its inputs over `x`, computed with numpy."""
    for layer in model.layers:
        if not isinstance(layer, keras.layers.BatchNormalization):
            continue
        probe = keras.Model(model.inputs, layer.input)
        values = np.asarray(probe.predict(x, batch_size=len(x), verbose=0))
        values = values.astype("float64").reshape(-1, values.shape[-1])
        layer.moving_mean.assign(values.mean(axis=0))
        layer.moving_variance.assign(values.var(axis=0))


def test_batchnorm_run_sweeps_with_and_without_recalibration(tmp_path):
    from keras_tdrop.experiments import datasets
    from keras_tdrop.pruning import prune

    run = tmp_path / "run"
    results = train_lib.train("none", str(run), recalibrate=40, **BN_TINY)
    names = sorted(p.name for p in run.glob("sweep*"))
    assert names == [
        "sweep.png",
        "sweep_recalibrated.png",
        "sweep_unit.csv",
        "sweep_unit_recalibrated.csv",
        "sweep_weight.csv",
        "sweep_weight_recalibrated.csv",
    ]
    assert results["recalibrate"] == 40
    config = json.loads((run / "config.json").read_text())
    assert "recalibrate" not in json.dumps(config)
    plain = keras.saving.load_model(run / "model.keras")
    # The first 40 training images, standardized as in training but not
    # augmented (the recipe augments CIFAR-10).
    assert config["recipe"]["augment"] is True
    x, _ = datasets.load_numpy("cifar10", "train", DATA_DIR, limit=40)
    x = standardized(x)
    x_test, y_test = datasets.load_numpy("cifar10", "test", DATA_DIR, 64)
    x_test = standardized(x_test)
    for targeting in ("weight", "unit"):
        rows = results["sweeps_recalibrated"][targeting]
        written = read_csv(run / f"sweep_{targeting}_recalibrated.csv")
        assert [float(r["fraction"]) for r in written] == [0.0, 0.5]
        assert [r["recalibrated"] for r in rows] == [True, True]
        assert [r["recalibrated"] for r in results["sweeps"][targeting]] == [
            False,
            False,
        ]
        for row, line in zip(rows, written):
            pruned = prune(
                plain, row["fraction"], targeting, exclude=config["exclude"]
            )
            set_statistics_from_inputs(pruned, x)
            train_lib.compile_model(pruned, config)
            expected = pruned.evaluate(
                x_test, y_test, verbose=0, return_dict=True
            )
            assert row["loss"] == approx(expected["loss"], rel=1e-4)
            assert row["accuracy"] == approx(expected["accuracy"])
            assert float(line["loss"]) == approx(row["loss"], rel=1e-5)
        # Recalibration changed what was measured.
        assert rows[0]["loss"] != approx(
            results["sweeps"][targeting][0]["loss"], rel=1e-3
        )
    assert json.loads((run / "results.json").read_text()) == results

    # A finished run with the same recalibration is reported as it is.
    assert train_lib.train("none", str(run), recalibrate=40, **BN_TINY) == (
        results
    )
    # Turned off on a re-sweep: the stale recalibrated sweeps go.
    resweep = train_lib.train(
        "none",
        str(run),
        recalibrate=0,
        **{**BN_TINY, "fractions": (0.0, 0.9)},
    )
    assert "sweeps_recalibrated" not in resweep
    assert not list(run.glob("*_recalibrated*"))
    # Added to a finished run (the option is not a setting of the run):
    # the plain sweeps are kept, the recalibrated ones added.
    again = train_lib.train(
        "none",
        str(run),
        recalibrate=40,
        **{**BN_TINY, "fractions": (0.0, 0.9)},
    )
    assert again["sweeps"] == resweep["sweeps"]
    assert again["recalibrate"] == 40
    assert [r["fraction"] for r in again["sweeps_recalibrated"]["unit"]] == [
        0.0,
        0.9,
    ]
    assert (run / "sweep_unit_recalibrated.csv").exists()


def test_recalibrate_zero_or_no_batchnorm_writes_no_recalibrated_sweeps(
    tmp_path,
):
    results = train_lib.train(
        "none", str(tmp_path / "bn"), recalibrate=0, **BN_TINY
    )
    assert "sweeps_recalibrated" not in results
    assert not list((tmp_path / "bn").glob("*_recalibrated*"))
    results = train_lib.train("none", str(tmp_path / "mlp"), **TINY)
    assert results["recalibrate"] == 2000
    assert "sweeps_recalibrated" not in results
    assert not list((tmp_path / "mlp").glob("*_recalibrated*"))
    assert (tmp_path / "mlp" / "sweep_unit.csv").exists()


@pytest.mark.parametrize("recalibrate", [-1, 2.5, True, "100"])
def test_bad_recalibrate_fails_before_any_work(tmp_path, recalibrate):
    with pytest.raises(ValueError, match="`recalibrate` must be an int >= 0"):
        train_lib.train(
            "none", str(tmp_path / "run"), recalibrate=recalibrate, **TINY
        )
    assert not (tmp_path / "run").exists()
