import keras
import numpy as np
import pytest
from keras import ops

from keras_tdrop.pruning import compute_masks
from keras_tdrop.pruning import prune
from keras_tdrop.pruning import prune_sweep


def trained_model():
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
    model.fit(x, y, epochs=3, verbose=0)
    return model, x, y


def test_rows_equal_pruning_from_scratch_and_model_untouched():
    model, x, y = trained_model()
    before = {v.path: ops.convert_to_numpy(v).copy() for v in model.weights}
    fractions = (0.0, 0.3, 0.6, 0.9)
    rows = prune_sweep(model, (x, y), fractions, verbose=0)
    assert [r["fraction"] for r in rows] == list(fractions)
    for row in rows:
        # int(p * 8) of 8 inputs removed per column of fc.
        assert row["sparsity"] == int(row["fraction"] * 8 + 1e-9) / 8
        pruned = prune(model, row["fraction"])
        pruned.compile(loss=model.loss, metrics=["accuracy"])
        expected = pruned.evaluate(x, y, verbose=0, return_dict=True)
        assert row["accuracy"] == pytest.approx(expected["accuracy"])
        assert row["loss"] == pytest.approx(expected["loss"], rel=1e-5)
    for v in model.weights:
        np.testing.assert_array_equal(ops.convert_to_numpy(v), before[v.path])


def test_unit_sweep_and_inplace_restores_weights():
    model, x, y = trained_model()
    kernel = ops.convert_to_numpy(model.get_layer("fc").kernel).copy()
    rows = prune_sweep(
        model, (x, y), (0.5,), targeting="unit", inplace=True, verbose=0
    )
    assert rows[0]["sparsity"] == pytest.approx(0.5)
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
    prune_sweep(model, (x, y), (0.0,), verbose=0)
    one = len(TRACES)
    TRACES.clear()
    prune_sweep(model, (x, y), (0.0, 0.2, 0.4, 0.6, 0.8), verbose=1)
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
    uncompiled = keras.Sequential([keras.Input((8,)), keras.layers.Dense(2)])
    with pytest.raises(ValueError, match=r"uncompiled model"):
        prune_sweep(uncompiled, (x, y))
