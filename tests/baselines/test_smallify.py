import keras
import numpy as np
import pytest
from keras import ops

from keras_tdrop.baselines import Smallify
from keras_tdrop.baselines import apply_smallify
from tests.tolerance import approx
from tests.tolerance import assert_close


def numpy_condition(signs, decay=0.9, threshold=0.5):
    """Transcription: moving mean/variance of sign(beta), alive per step."""
    mean = np.ones(signs.shape[1])
    variance = np.zeros(signs.shape[1])
    alive = np.ones(signs.shape[1])
    history = []
    for sign in signs:
        diff = sign - mean
        mean = mean + (1 - decay) * diff
        variance = decay * (variance + (1 - decay) * diff**2)
        alive = alive * (variance <= threshold)
        history.append(alive.copy())
    return np.array(history)


def switch_layer(units=4, inputs=3, **kwargs):
    layer = Smallify(keras.layers.Dense(units, activation="relu"), **kwargs)
    layer.build((None, inputs))
    return layer


def test_pruning_condition_fires_on_oscillating_signs():
    # Unit 0 keeps its sign, unit 1 oscillates from step 5, unit 2 crosses
    # zero once at step 10, unit 3 oscillates slowly (every 4 steps).
    steps = 30
    signs = np.ones((steps, 4))
    signs[5:, 1] = np.where(np.arange(steps - 5) % 2, 1.0, -1.0)
    signs[10:, 2] = -1.0
    signs[:, 3] = np.where((np.arange(steps) // 4) % 2, -1.0, 1.0)
    expected = numpy_condition(signs)
    layer = switch_layer()
    x = np.ones((2, 3), "float32")
    for step, sign in enumerate(signs):
        layer.switch.assign((0.01 * sign).astype("float32"))
        layer(x, training=True)
        np.testing.assert_array_equal(
            ops.convert_to_numpy(layer.alive), expected[step], err_msg=step
        )
    # Oscillating unit 1 is switched off three steps into its oscillation;
    # a steady sign never is.
    assert expected[7, 1] == 0 and expected[6, 1] == 1
    assert expected[-1, 0] == 1
    assert ops.convert_to_numpy(layer.alive).tolist() == expected[-1].tolist()
    # Inference calls do not move the statistics.
    before = ops.convert_to_numpy(layer.sign_variance).copy()
    layer(x, training=False)
    np.testing.assert_array_equal(
        ops.convert_to_numpy(layer.sign_variance), before
    )


def test_switches_scale_units_and_fold_into_kernel_and_bias():
    layer = switch_layer(coefficient=0.5)
    beta = np.array([1.5, -0.5, 0.0, 2.0], "float32")
    layer.switch.assign(beta)
    layer.alive.assign(np.array([1, 1, 1, 0], "float32"))
    kernel = ops.convert_to_numpy(layer.layer.kernel)
    bias = np.array([0.1, 0.2, 0.3, 0.4], "float32")
    layer.layer.bias.assign(bias)
    x = np.random.default_rng(0).normal(size=(5, 3)).astype("float32")
    gate = beta * np.array([1, 1, 1, 0])
    expected = np.maximum((x @ kernel + bias) * gate, 0)
    assert_close(ops.convert_to_numpy(layer(x)), expected, rtol=1e-5, atol=1e-6)
    (loss,) = layer.losses
    assert float(loss) == approx(0.5 * np.abs(gate).sum())
    folded_kernel, folded_bias = layer.folded_weights()
    assert_close(folded_kernel, kernel * gate, rtol=1e-6)
    assert_close(folded_bias, bias * gate, rtol=1e-6)
    np.testing.assert_array_equal(layer.masks()[0][:, 3], 0)
    assert_close(layer.importances()[0], np.broadcast_to(np.abs(gate), (3, 4)))


def test_fit_drives_switches_down():
    model = keras.Sequential(
        [
            keras.Input((6,)),
            keras.layers.Dense(16, activation="relu", name="fc1"),
            keras.layers.Dense(2, name="logits"),
        ]
    )
    small = apply_smallify(model, coefficient=0.05)
    small.compile(keras.optimizers.Adam(0.05), "mse")
    x = np.random.default_rng(0).normal(size=(64, 6)).astype("float32")
    small.fit(x, 0.0 * x[:, :2], epochs=10, batch_size=16, verbose=0)
    layer = small.get_layer("smallify_fc1")
    gate = ops.convert_to_numpy(layer.gate())
    # With a zero target, the L1 pull wins: switches near 0 or switched off.
    assert np.abs(gate).mean() < 0.5
    assert ops.convert_to_numpy(layer.sign_variance).max() > 0


@pytest.mark.parametrize(
    "kwargs, match",
    [({"decay": 1.0}, "decay"), ({"threshold": -1}, "threshold")],
)
def test_bad_arguments_raise(kwargs, match):
    with pytest.raises(ValueError, match=match):
        Smallify(keras.layers.Dense(2), **kwargs)
