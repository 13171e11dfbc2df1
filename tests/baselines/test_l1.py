import keras
import numpy as np
import pytest
from keras import ops

from keras_tdrop.baselines import apply_l1
from keras_tdrop.baselines import strip_l1
from tests.tolerance import approx
from tests.tolerance import assert_close


def cnn():
    inputs = keras.Input((6, 6, 1))
    x = keras.layers.Conv2D(3, 3, activation="relu", name="stem")(inputs)
    x = keras.layers.Flatten()(x)
    x = keras.layers.Dense(5, activation="relu", name="fc1")(x)
    return keras.Model(inputs, keras.layers.Dense(2, name="logits")(x))


def test_l1_penalty_is_keras_l1_on_every_kernel_but_the_logits():
    model = cnn()
    l1 = apply_l1(model, coefficient=0.03, exclude=["stem"])
    fc1 = l1.get_layer("fc1")
    assert isinstance(fc1.kernel_regularizer, keras.regularizers.L1)
    assert l1.get_layer("stem").kernel_regularizer is None
    assert l1.get_layer("logits").kernel_regularizer is None
    assert fc1.bias_regularizer is None
    expected = 0.03 * np.abs(ops.convert_to_numpy(fc1.kernel)).sum()
    assert float(sum(l1.losses)) == approx(expected, rel=1e-5)
    # The copy starts from the original's weights; the original is untouched.
    assert model.get_layer("fc1").kernel_regularizer is None
    for a, b in zip(model.weights, l1.weights):
        np.testing.assert_array_equal(ops.convert_to_numpy(a), b)


def test_fit_shrinks_weights_and_strip_removes_the_regularizer(tmp_path):
    model = cnn()
    x = np.random.default_rng(0).normal(size=(32, 6, 6, 1))
    runs = {}
    for coefficient in (0.0, 0.1):
        l1 = apply_l1(model, coefficient=coefficient)
        l1.compile(keras.optimizers.Adam(0.01), "mse")
        l1.fit(x, x[:, :2, 0, 0], epochs=5, batch_size=8, verbose=0)
        runs[coefficient] = l1
    norm = {
        c: np.abs(ops.convert_to_numpy(m.get_layer("fc1").kernel)).sum()
        for c, m in runs.items()
    }
    assert norm[0.1] < 0.7 * norm[0.0]
    plain = strip_l1(runs[0.1])
    assert plain.losses == []
    assert_close(plain.predict(x, verbose=0), runs[0.1].predict(x, verbose=0))
    path = tmp_path / "l1.keras"
    runs[0.1].save(path)
    loaded = keras.saving.load_model(path)
    assert float(sum(loaded.losses)) == approx(
        float(sum(runs[0.1].losses)), rel=1e-6
    )


def test_bad_coefficient_raises():
    with pytest.raises(ValueError, match="coefficient=-0.1"):
        apply_l1(cnn(), coefficient=-0.1)
