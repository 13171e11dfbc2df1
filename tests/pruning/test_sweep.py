import csv
import functools

import keras
import numpy as np
import pytest
from keras import ops

from keras_tdrop.pruning import apply_masks
from keras_tdrop.pruning import compare_sweeps
from keras_tdrop.pruning import compute_masks
from keras_tdrop.pruning import format_sweep
from keras_tdrop.pruning import plot_sweeps
from keras_tdrop.pruning import print_progress
from keras_tdrop.pruning import prune
from keras_tdrop.pruning import prune_sweep
from keras_tdrop.pruning import sweep_models
from keras_tdrop.pruning import write_csv
from tests.tolerance import approx


@functools.cache
def trained_model():
    """Trained once; the tests never modify it (inplace sweeps restore it)."""
    rng = np.random.default_rng(0)
    inputs = keras.Input((8,))
    x = keras.layers.Dense(20, activation="relu", name="fc")(inputs)
    outputs = keras.layers.Dense(3, name="logits")(x)
    model = keras.Model(inputs, outputs)
    model.compile(
        "adam",
        keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    x = rng.normal(size=(96, 8)).astype("float32")
    y = (x[:, 0] > 0).astype("int32") + (x[:, 1] > 1).astype("int32")
    model.fit(x, y, epochs=3)
    return model, x, y


def test_rows_equal_pruning_from_scratch_and_model_untouched():
    model, x, y = trained_model()
    before = {v.path: ops.convert_to_numpy(v).copy() for v in model.weights}
    fractions = (0.0, 0.3, 0.6, 0.9)
    rows = prune_sweep(model, (x, y), fractions)
    assert [r["fraction"] for r in rows] == list(fractions)
    for row in rows:
        # int(p * 8) of 8 inputs removed per column of fc.
        assert row["sparsity"] == int(row["fraction"] * 8 + 1e-9) / 8
        pruned = prune(model, row["fraction"])
        pruned.compile(loss=model.loss, metrics=["accuracy"])
        expected = pruned.evaluate(x, y, verbose=0, return_dict=True)
        assert row["accuracy"] == approx(expected["accuracy"])
        assert row["loss"] == approx(expected["loss"], rel=1e-5)
    for v in model.weights:
        np.testing.assert_array_equal(ops.convert_to_numpy(v), before[v.path])


def test_size_columns():
    model, x, y = trained_model()
    rows = prune_sweep(model, (x, y), (0.0, 0.5, 0.875))
    for row in rows:
        pruned = prune(model, row["fraction"])
        nonzero = sum(np.count_nonzero(w) for w in pruned.get_weights())
        # fc 8x20 + 20, logits 20x3 + 3; masks keep the shapes: the FLOPs
        # (8x20 + 20x3 MACs) and the speed-up do not change.
        assert row["parameters"] == 243
        assert row["nonzero"] == nonzero
        assert row["compression"] == 243 / nonzero
        assert row["flops"] == 220
        assert row["speedup"] == 1.0
    # 4 and 7 of fc's 8 inputs removed per column.
    assert rows[0]["nonzero"] - rows[1]["nonzero"] == 4 * 20
    assert rows[0]["nonzero"] - rows[2]["nonzero"] == 7 * 20


def test_unit_sweep_and_inplace_restores_weights():
    model, x, y = trained_model()
    kernel = ops.convert_to_numpy(model.get_layer("fc").kernel).copy()
    rows = prune_sweep(model, (x, y), (0.5,), targeting="unit", inplace=True)
    assert rows[0]["sparsity"] == approx(0.5)
    np.testing.assert_array_equal(
        ops.convert_to_numpy(model.get_layer("fc").kernel), kernel
    )
    assert set(compute_masks(model, 0.5)) == {"fc/kernel"}


TRACES = []


class CountingReLU(keras.layers.Layer):
    """Counts how often its Python `call` runs: once per trace in graphs."""

    def call(self, inputs):
        TRACES.append(1)
        return keras.ops.relu(inputs)


def test_evaluate_is_traced_once_for_the_whole_sweep(capsys):
    inputs = keras.Input((8,))
    x = keras.layers.Dense(20, name="fc")(inputs)
    x = CountingReLU()(x)
    model = keras.Model(inputs, keras.layers.Dense(3, name="logits")(x))
    model.compile(loss="mse", metrics=["mae"])
    x = np.random.default_rng(1).normal(size=(64, 8)).astype("float32")
    y = np.zeros((64, 3), "float32")
    TRACES.clear()
    prune_sweep(model, (x, y), (0.0,))
    one = len(TRACES)
    TRACES.clear()
    fractions = (0.0, 0.2, 0.4, 0.6, 0.8)
    prune_sweep(model, (x, y), fractions, progress=print_progress)
    assert len(TRACES) == one
    assert "[5/5] pruned 80%" in capsys.readouterr().out


def test_bad_arguments():
    model, x, y = trained_model()
    with pytest.raises(ValueError, match=r"fractions=\(0.5, 2\)"):
        prune_sweep(model, (x, y), (0.5, 2))
    with pytest.raises(ValueError, match=r"fractions=\(\)"):
        prune_sweep(model, (x, y), ())
    with pytest.raises(ValueError, match=r"targeting='rows'"):
        prune_sweep(model, (x, y), targeting="rows")
    with pytest.raises(ValueError, match=r"`data` is empty"):
        prune_sweep(model, (x[:0], y[:0]), (0.5,))
    uncompiled = keras.Sequential([keras.Input((8,)), keras.layers.Dense(2)])
    with pytest.raises(ValueError, match=r"uncompiled model"):
        prune_sweep(uncompiled, (x, y))


def evaluate_with(model, masks, x, y):
    pruned = apply_masks(model, masks)
    pruned.compile(loss=model.loss, metrics=["accuracy"])
    return pruned.evaluate(x, y, verbose=0, return_dict=True)


@pytest.mark.parametrize(
    "options",
    [
        dict(scope="global"),
        dict(targeting="unit", scope="global"),
        dict(criterion="random", seed=5),
        dict(targeting="unit", criterion="random", seed=5),
        dict(block_size=4),
    ],
)
def test_mask_kinds_equal_pruning_from_scratch(options):
    model, x, y = trained_model()
    fractions = (0.0, 0.25, 0.5, 0.75)
    targeting = options.pop("targeting", "weight")
    rows = prune_sweep(model, (x, y), fractions, targeting=targeting, **options)
    for row in rows:
        masks = compute_masks(model, row["fraction"], targeting, **options)
        total = sum(m.size for m in masks.values())
        zeros = sum(int((m == 0).sum()) for m in masks.values())
        assert row["sparsity"] == zeros / total
        # fc: 8 inputs x 20 units; every kind removes exactly p of them.
        assert row["sparsity"] == row["fraction"]
        expected = evaluate_with(model, masks, x, y)
        assert row["accuracy"] == approx(expected["accuracy"])


def test_random_sweep_masks_are_nested():
    model, x, y = trained_model()
    small = compute_masks(model, 0.3, criterion="random", seed=2)
    large = compute_masks(model, 0.6, criterion="random", seed=2)
    for path in small:
        assert np.all(large[path] <= small[path])


def test_scores_sweep():
    model, x, y = trained_model()
    kernel = ops.convert_to_numpy(model.get_layer("fc").kernel)
    # Ranking by -|w| prunes the largest weights: accuracy collapses.
    scores = {"fc/kernel": -np.abs(kernel)}
    rows = prune_sweep(model, (x, y), (0.0, 0.75), scores=scores)
    masks = compute_masks(model, 0.75, scores=scores)
    smallest = np.argsort(np.abs(kernel), axis=0)[:2]
    expected_mask = np.zeros_like(kernel)
    np.put_along_axis(expected_mask, smallest, 1.0, axis=0)
    np.testing.assert_array_equal(masks["fc/kernel"], expected_mask)
    expected = evaluate_with(model, masks, x, y)
    assert rows[1]["accuracy"] == approx(expected["accuracy"])
    with pytest.raises(ValueError, match=r"no entry"):
        prune_sweep(model, (x, y), (0.5,), scores={})


def test_computes_and_reports_nothing(tmp_path, capsys):
    model, x, y = trained_model()
    calls = []
    rows = prune_sweep(
        model, (x, y), (0.0, 0.5), progress=lambda *a: calls.append(a)
    )
    assert capsys.readouterr().out == ""
    assert calls == [(rows[0], 1, 2), (rows[1], 2, 2)]
    with pytest.raises(TypeError, match=r"argument 'csv'"):
        prune_sweep(model, (x, y), (0.0,), csv="sweep.csv")


def legacy_sweep(tmp_path, **kwargs):
    model, x, y = trained_model()
    with pytest.warns(DeprecationWarning) as caught:
        rows = prune_sweep(
            model,
            (x, y),
            (0.0, 0.5),
            csv_path=tmp_path / "sweep.csv",
            plot_path=tmp_path / "sweep.png",
            **kwargs,
        )
    return rows, str(caught[0].message)


def test_deprecated_reporting_arguments_still_report(tmp_path, capsys):
    rows, message = legacy_sweep(tmp_path)
    assert message == (
        "`prune_sweep(csv_path=..., plot_path=...)` is deprecated and will "
        "be removed: `prune_sweep` computes and returns the rows, and the "
        "functions of `keras_tdrop.pruning` report them: "
        "`write_csv(rows, csv_path)`; `plot_sweeps({name: rows}, plot_path)`."
    )
    printed = capsys.readouterr().out
    # verbose=1 was the default: progress lines and the table.
    assert "[2/2] pruned 50%" in printed
    assert "prune %  sparsity  accuracy     loss" in printed
    last = rows[-1]
    assert (
        f"    50%    0.5000  {last['accuracy']:>8.4f}  {last['loss']:>7.4f}"
    ) in printed
    with open(tmp_path / "sweep.csv", newline="") as f:
        header = f.readline().strip()
        table = list(csv.DictReader(f, fieldnames=header.split(",")))
    assert header == (
        "fraction,sparsity,accuracy,loss,parameters,nonzero,compression,"
        "flops,speedup,recalibrated"
    )
    assert table[1]["recalibrated"] == "False"
    assert float(table[1]["accuracy"]) == approx(last["accuracy"], abs=1e-6)
    assert (tmp_path / "sweep.png").read_bytes()[:4] == b"\x89PNG"
    _, message = legacy_sweep(tmp_path, verbose=0, name="mlp")
    assert (
        "prune_sweep(csv_path=..., plot_path=..., verbose=..., name=...)"
        in (message)
    )
    assert "progress=print_progress`, then `print(format_sweep(rows))`" in (
        message
    )
    assert capsys.readouterr().out == ""


def test_report_functions_write_what_the_arguments_did(tmp_path, capsys):
    rows, _ = legacy_sweep(tmp_path)
    legacy = capsys.readouterr().out
    model, x, y = trained_model()
    again = prune_sweep(model, (x, y), (0.0, 0.5), progress=print_progress)
    print(format_sweep(again))
    write_csv(again, tmp_path / "new.csv")
    plot_sweeps(
        {model.name: again},
        tmp_path / "new.png",
        xlabel="pruned weights per column (%)",
    )
    assert again == rows
    assert capsys.readouterr().out == legacy
    for ext in ("csv", "png"):
        assert (tmp_path / f"new.{ext}").read_bytes() == (
            tmp_path / f"sweep.{ext}"
        ).read_bytes()


def test_sweep_models_compares(tmp_path, capsys):
    model, x, y = trained_model()
    other = prune(model, 0.5)
    other.compile(loss=model.loss, metrics=["accuracy"])
    models = {"base": model, "halved": other}
    sweeps = sweep_models(models, (x, y), (0.0, 0.5, 0.75))
    assert capsys.readouterr().out == ""
    assert list(sweeps) == ["base", "halved"]
    # Pruning the half-pruned model by 50% again removes the same weights.
    assert sweeps["halved"][1]["accuracy"] == sweeps["base"][1]["accuracy"]
    assert sweeps["halved"][0]["accuracy"] == sweeps["base"][1]["accuracy"]
    # The halved model is 50% sparse at 0% already: one sparsity column
    # per model.
    assert format_sweep(sweeps).splitlines()[0] == (
        "prune %  sp. base     base  sp. halved   halved"
    )
    assert list(compare_sweeps(sweeps)[0]) == [
        "prune_fraction",
        "sparsity_base",
        "accuracy_base",
        "sparsity_halved",
        "accuracy_halved",
    ]


def test_sweep_models_deprecated_reporting(tmp_path, capsys):
    model, x, y = trained_model()
    other = prune(model, 0.5)
    other.compile(loss=model.loss, metrics=["accuracy"])
    with pytest.warns(DeprecationWarning, match=r"compare_sweeps\(sweeps"):
        sweeps = sweep_models(
            {"base": model, "halved": other},
            (x, y),
            (0.0, 0.5, 0.75),
            csv_path=tmp_path / "compare.csv",
            plot_path=tmp_path / "compare.png",
        )
    printed = capsys.readouterr().out
    assert "Pruning halved.\n[1/3] pruned 0%" in printed
    assert printed.endswith("\n\n" + format_sweep(sweeps) + "\n")
    with open(tmp_path / "compare.csv", newline="") as f:
        table = list(csv.DictReader(f))
    assert [float(r["sparsity_halved"]) for r in table] == [0.5, 0.5, 0.75]
    assert (tmp_path / "compare.png").read_bytes()[:4] == b"\x89PNG"
    with pytest.raises(ValueError, match=r"metric='f1'"):
        with pytest.warns(DeprecationWarning):
            sweep_models(
                {"base": model}, (x, y), (0.0,), metric="f1", verbose=0
            )


def test_sparsity_counts_zeros_the_model_already_had():
    model, x, y = trained_model()
    # fc (8 x 20) saved with its 6 lowest-|w| weights per column zeroed, as
    # a model stripped with its targeted set pruned is.
    sparse = prune(model, 0.75)
    sparse.compile(loss=model.loss, metrics=["accuracy"])
    rows = prune_sweep(sparse, (x, y), (0.0, 0.5, 0.75, 0.875))
    # Pruning below 75% removes zeros only: sparsity and accuracy stay.
    assert [r["sparsity"] for r in rows] == [0.75, 0.75, 0.75, 0.875]
    assert rows[0]["accuracy"] == rows[1]["accuracy"] == rows[2]["accuracy"]
