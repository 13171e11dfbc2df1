import keras
import numpy as np
import pytest
from keras import ops

from keras_tdrop.baselines import VariationalDropout
from keras_tdrop.baselines import apply_variational_dropout
from keras_tdrop.baselines import baseline_layers
from keras_tdrop.baselines.variational import kl_approximation
from tests.tolerance import approx
from tests.tolerance import assert_close

K1, K2, K3 = 0.63576, 1.87320, 1.48695


def numpy_kl(log_alpha):
    """The paper's Eq. 14 with C = -k1, written out in numpy."""
    sig = 1.0 / (1.0 + np.exp(-(K2 + K3 * log_alpha)))
    return -(K1 * sig - 0.5 * np.log1p(np.exp(-log_alpha)) - K1)


def true_kl_up_to_a_constant(log_alpha):
    """-0.5 log alpha + E log|e|, e ~ N(1, alpha): the KL to the log-uniform
    prior, up to an additive constant (Molchanov et al., Eq. 8)."""
    std = np.sqrt(np.exp(log_alpha))
    e = np.linspace(1 - 12 * std, 1 + 12 * std, 400001)
    pdf = np.exp(-0.5 * ((e - 1) / std) ** 2) / (std * np.sqrt(2 * np.pi))
    log_abs = np.log(np.maximum(np.abs(e), 1e-300))
    return -0.5 * log_alpha + np.trapezoid(pdf * log_abs, e)


def test_kl_approximation_is_the_formula_and_close_to_the_true_kl():
    log_alphas = np.linspace(-4, 4, 9).astype("float32")
    kl = ops.convert_to_numpy(kl_approximation(log_alphas))
    assert_close(kl, numpy_kl(log_alphas), rtol=1e-5)
    true = np.array([true_kl_up_to_a_constant(a) for a in log_alphas])
    gap = kl - true
    # The paper reports the approximation within 0.01 of the true KL.
    assert np.abs(gap - gap.mean()).max() < 0.01
    # Large alpha costs nothing, small alpha a lot.
    assert ops.convert_to_numpy(kl_approximation(10.0)) < 1e-3
    assert kl[0] > kl[-1] + 1.5


def dense_layer(units=3, inputs=4, log_sigma2=None, seed=0):
    layer = VariationalDropout(keras.layers.Dense(units), seed=seed)
    layer.build((None, inputs))
    if log_sigma2 is not None:
        layer.log_sigma2.assign(log_sigma2)
    return layer


def test_penalty_and_log_alpha():
    rng = np.random.default_rng(0)
    layer = VariationalDropout(keras.layers.Dense(3), coefficient=0.5)
    layer.build((None, 4))
    log_sigma2 = rng.normal(-2, 2, size=(4, 3)).astype("float32")
    layer.log_sigma2.assign(log_sigma2)
    kernel = ops.convert_to_numpy(layer.layer.kernel)
    log_alpha = np.clip(log_sigma2 - np.log(kernel**2 + 1e-8), -10, 10)
    assert_close(ops.convert_to_numpy(layer.log_alpha()), log_alpha, rtol=1e-5)
    layer(np.ones((2, 4), "float32"), training=True)
    (loss,) = layer.losses
    assert float(loss) == approx(0.5 * numpy_kl(log_alpha).sum(), rel=1e-5)
    assert_close(layer.importances()[0], -log_alpha, rtol=1e-5)


def test_local_reparameterisation_moments_dense():
    rng = np.random.default_rng(1)
    log_sigma2 = rng.uniform(-3, 0, size=(4, 3)).astype("float32")
    layer = dense_layer(log_sigma2=log_sigma2)
    layer.layer.bias.assign(np.array([0.5, -1.0, 2.0], "float32"))
    x = np.tile(rng.normal(size=(1, 4)).astype("float32"), (20000, 1))
    draws = ops.convert_to_numpy(layer(x, training=True))
    kernel = ops.convert_to_numpy(layer.layer.kernel)
    mean = x[0] @ kernel + np.array([0.5, -1.0, 2.0])
    variance = x[0] ** 2 @ np.exp(log_sigma2)
    n = len(draws)
    assert_close(draws.mean(0), mean, atol=4 * np.sqrt(variance.max() / n))
    # The sample variance has relative sd sqrt(2 / n) ~ 1%.
    assert_close(draws.var(0), variance, rtol=0.05)
    # Independent noise per example (local reparameterisation).
    assert np.corrcoef(draws[:-1, 0], draws[1:, 0])[0, 1] < 0.05


def test_local_reparameterisation_moments_conv_with_activation():
    rng = np.random.default_rng(2)
    conv = keras.layers.Conv2D(2, 3, activation="relu", name="conv")
    layer = VariationalDropout(conv, threshold=None, seed=1)
    layer.build((None, 5, 5, 1))
    log_sigma2 = rng.uniform(-4, -1, size=(3, 3, 1, 2)).astype("float32")
    layer.log_sigma2.assign(log_sigma2)
    x = np.tile(
        rng.normal(size=(1, 5, 5, 1)).astype("float32"), (4000, 1, 1, 1)
    )
    draws = ops.convert_to_numpy(layer(x, training=True))
    assert draws.min() >= 0.0  # the activation is applied after the noise
    # Pre-activation moments, from plain convolutions of x and x^2.
    mean = ops.convert_to_numpy(ops.conv(x[:1], conv.kernel) + conv.bias)[0]
    std = np.sqrt(
        ops.convert_to_numpy(ops.conv(x[:1] ** 2, np.exp(log_sigma2)))[0]
    )
    # E[relu(m + s e)] = m Phi(m/s) + s phi(m/s).
    from math import erf

    z = mean / std
    phi = np.exp(-0.5 * z**2) / np.sqrt(2 * np.pi)
    big_phi = 0.5 * (1 + np.vectorize(erf)(z / np.sqrt(2)))
    expected = mean * big_phi + std * phi
    assert_close(
        draws.mean(0), expected, atol=4 * std.max() / np.sqrt(len(draws))
    )


def test_inference_drops_weights_above_the_threshold():
    layer = dense_layer(units=3, inputs=4)
    kernel = ops.convert_to_numpy(layer.layer.kernel)
    log_sigma2 = np.log(kernel**2 + 1e-8) + np.array(
        [[4.0, 0.0, 2.9], [3.1, -5.0, 3.5], [0.0, 0.0, 0.0], [5, 5, -1]]
    )
    layer.log_sigma2.assign(log_sigma2.astype("float32"))
    keep = np.array(
        [[0, 1, 1], [0, 1, 0], [1, 1, 1], [0, 0, 1]], dtype="float32"
    )
    np.testing.assert_array_equal(layer.masks()[0], keep)
    x = np.random.default_rng(3).normal(size=(2, 4)).astype("float32")
    assert_close(ops.convert_to_numpy(layer(x)), x @ (kernel * keep), rtol=1e-5)


def test_fit_and_only_dense_and_conv_are_wrapped():
    inputs = keras.Input((6, 6, 1))
    x = keras.layers.DepthwiseConv2D(3, name="depthwise")(inputs)
    x = keras.layers.Conv2D(3, 3, activation="relu", name="conv")(x)
    x = keras.layers.Flatten()(x)
    x = keras.layers.Dense(5, activation="relu", name="fc1")(x)
    model = keras.Model(inputs, keras.layers.Dense(2, name="logits")(x))
    vd = apply_variational_dropout(model, coefficient=1e-3, seed=0)
    assert {w.layer.name for w in baseline_layers(vd)} == {"conv", "fc1"}
    vd.compile("adam", "mse")
    data = np.random.default_rng(0).normal(size=(32, 6, 6, 1))
    history = vd.fit(data, data[:, :2, 0, 0], epochs=2, verbose=0)
    assert np.isfinite(history.history["loss"]).all()
    with pytest.raises(ValueError, match="'depthwise'.*DepthwiseConv2D"):
        VariationalDropout(model.get_layer("depthwise"))
