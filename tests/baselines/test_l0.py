import keras
import numpy as np
import pytest
from keras import ops

from keras_tdrop.baselines import L0Gate
from keras_tdrop.baselines import apply_l0
from keras_tdrop.baselines.l0 import keep_probability
from tests.tolerance import approx
from tests.tolerance import assert_close
from tests.tolerance import close

BETA, GAMMA, ZETA = 2.0 / 3.0, -0.1, 1.1


def sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def cdf(t, log_alpha):
    """P(z <= t) of the hard concrete, 0 <= t < 1 (Louizos et al., Eq. 10)."""
    stretched = (t - GAMMA) / (ZETA - GAMMA)
    return sigmoid(BETA * np.log(stretched / (1 - stretched)) - log_alpha)


def gate_layer(log_alpha, shape=(100, 200), targeting="weight", seed=0):
    layer = L0Gate(keras.layers.Dense(shape[1]), targeting=targeting, seed=seed)
    layer.build((None, shape[0]))
    (variable,) = layer.log_alphas
    variable.assign(np.full(variable.shape, log_alpha, "float32"))
    return layer


@pytest.mark.parametrize("log_alpha", [-2.0, 0.0, 1.5])
def test_training_gates_follow_the_hard_concrete_cdf(log_alpha):
    layer = gate_layer(log_alpha)
    draws = np.concatenate(
        [ops.convert_to_numpy(layer.gates(True)[0]).ravel() for _ in range(10)]
    )
    n = draws.size  # 200,000 gates
    for t in (0.0, 0.25, 0.5, 0.75):
        p = cdf(t, log_alpha)
        tolerance = 4 * np.sqrt(p * (1 - p) / n)
        assert np.mean(draws <= t) == approx(p, abs=tolerance)
    p_one = 1 - cdf(1.0 - 1e-12, log_alpha)
    assert np.mean(draws == 1.0) == approx(
        p_one, abs=4 * np.sqrt(p_one * (1 - p_one) / n)
    )
    assert draws.min() >= 0.0 and draws.max() <= 1.0
    # The keep probability is 1 - P(z = 0).
    keep = ops.convert_to_numpy(keep_probability(log_alpha, BETA, GAMMA, ZETA))
    assert keep == approx(1 - cdf(0.0, log_alpha), rel=1e-6)


def test_inference_uses_the_deterministic_gate():
    rng = np.random.default_rng(1)
    layer = gate_layer(0.0, shape=(5, 3))
    values = rng.normal(0, 2, size=(5, 3)).astype("float32")
    layer.log_alphas[0].assign(values)
    x = rng.normal(size=(4, 5)).astype("float32")
    gate = np.clip(sigmoid(values) * (ZETA - GAMMA) + GAMMA, 0, 1)
    kernel = ops.convert_to_numpy(layer.layer.kernel)
    expected = x @ (kernel * gate)
    assert_close(
        ops.convert_to_numpy(layer(x, training=False)),
        expected,
        rtol=1e-5,
        # float32 rounding of a sum of products: 2.2e-8 seen on one CPU.
        atol=1e-6 * max(1.0, float(np.abs(expected).max())),
    )
    # The same inputs give the same outputs; some gates are exactly 0.
    np.testing.assert_array_equal(
        ops.convert_to_numpy(layer(x)), ops.convert_to_numpy(layer(x))
    )
    assert (gate == 0).any() and (layer.masks()[0] == (gate > 0)).all()


@pytest.mark.parametrize("targeting, per_gate", [("weight", 1), ("unit", 5)])
def test_penalty_is_the_expected_l0_norm(targeting, per_gate):
    rng = np.random.default_rng(2)
    layer = L0Gate(
        keras.layers.Dense(3), coefficient=0.25, targeting=targeting, seed=1
    )
    layer.build((None, 5))
    values = rng.normal(size=layer.log_alphas[0].shape).astype("float32")
    layer.log_alphas[0].assign(values)
    layer(np.ones((2, 5), "float32"), training=True)
    keep = sigmoid(values - BETA * np.log(-GAMMA / ZETA))
    (loss,) = layer.losses
    assert float(loss) == approx(0.25 * per_gate * keep.sum(), rel=1e-5)
    importance = layer.importances()[0]
    assert importance.shape == (5, 3)
    assert_close(importance, np.broadcast_to(keep, (5, 3)), rtol=1e-5)


def test_unit_gates_share_one_draw_per_column():
    layer = gate_layer(0.0, shape=(6, 40), targeting="unit")
    x = np.eye(6, dtype="float32")
    kernel = ops.convert_to_numpy(layer.layer.kernel)
    ratio = ops.convert_to_numpy(layer(x, training=True)) / kernel
    # Each column is scaled by one gate, the same for all its rows.
    assert_close(ratio, ratio[:1].repeat(6, 0), atol=1e-5)


def fitted_gate(coefficient):
    model = keras.Sequential(
        [
            keras.Input((6,)),
            keras.layers.Dense(8, name="fc1"),
            keras.layers.Dense(2, name="logits"),
        ]
    )
    l0 = apply_l0(model, coefficient=coefficient, seed=3)
    gate = l0.get_layer("l0_fc1")
    kernel_before = ops.convert_to_numpy(gate.layer.kernel).copy()
    l0.compile(keras.optimizers.Adam(0.1), "mse")
    x = np.random.default_rng(0).normal(size=(64, 6)).astype("float32")
    l0.fit(x, x[:, :2], epochs=5, batch_size=16, verbose=0)
    assert not close(
        ops.convert_to_numpy(gate.layer.kernel), kernel_before, rtol=1e-5
    )
    return gate.importances()[0].mean()


def test_fit_with_the_penalty_lowers_keep_probabilities():
    assert fitted_gate(0.5) < fitted_gate(0.0) - 0.2


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"gamma": 0.1}, "gamma"),
        ({"zeta": 1.0}, "zeta"),
        ({"beta": 0}, "beta"),
        ({"droprate_init": 1.0}, "droprate_init"),
        ({"coefficient": -1}, "coefficient"),
        ({"targeting": "row"}, "targeting"),
    ],
)
def test_bad_arguments_raise(kwargs, match):
    with pytest.raises(ValueError, match=match):
        L0Gate(keras.layers.Dense(2), **kwargs)


def test_layer_without_kernel_is_refused():
    layer = keras.layers.Flatten(name="flat")
    layer.build((None, 2, 2))
    with pytest.raises(ValueError, match="'flat'"):
        L0Gate(layer)
