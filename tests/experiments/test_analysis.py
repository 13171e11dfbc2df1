import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_tdrop.experiments import analysis
from tests.tolerance import assert_close


def tiny_model(seed=0):
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((3,))
    x = keras.layers.Dense(4, activation="tanh", name="hidden")(inputs)
    outputs = keras.layers.Dense(3, name="logits")(x)
    return keras.Model(inputs, outputs)


def tiny_data(n=40, seed=1):
    rng = np.random.default_rng(seed)
    return (
        rng.normal(size=(n, 3)).astype("float32"),
        rng.integers(0, 3, n).astype("int32"),
    )


def explicit(model, data):
    """Loss, gradient and Hessian over ALL parameters, written out by hand:
    the network as a function of one flat vector, H by nested jacobians."""
    x, y = data
    shapes = [tuple(v.shape) for v in model.trainable_variables]
    sizes = [int(np.prod(s)) for s in shapes]
    flat = tf.constant(
        np.concatenate(
            [v.numpy().ravel() for v in model.trainable_variables]
        ).astype("float64")
    )

    def loss(theta):
        parts = tf.split(theta, sizes)
        w1, b1, w2, b2 = [tf.reshape(p, s) for p, s in zip(parts, shapes)]
        logits = tf.tanh(x.astype("float64") @ w1 + b1) @ w2 + b2
        return tf.reduce_mean(
            tf.nn.sparse_softmax_cross_entropy_with_logits(y, logits)
        )

    with tf.GradientTape() as outer:
        outer.watch(flat)
        with tf.GradientTape() as inner:
            inner.watch(flat)
            value = loss(flat)
        grad = inner.gradient(value, flat)
    hessian = outer.jacobian(grad, flat)
    return value.numpy(), grad.numpy(), hessian.numpy(), sizes, loss


def test_hvp_estimate_equals_explicit_hessian():
    model = tiny_model()
    data = tiny_data()
    _, g, h, sizes, _ = explicit(model, data)
    rng = np.random.default_rng(2)
    deltas = {
        "hidden/kernel": rng.normal(size=(3, 4)).astype("float32"),
        "logits/kernel": rng.normal(size=(4, 3)).astype("float32"),
    }
    d = np.concatenate(
        [
            deltas["hidden/kernel"].ravel(),
            np.zeros(sizes[1]),
            deltas["logits/kernel"].ravel(),
            np.zeros(sizes[3]),
        ]
    )
    # Batches of 500 cover the 40 examples at once; also check that
    # batching (a dataset of 4 batches) gives the same means.
    for source in (data, tf.data.Dataset.from_tensor_slices(data).batch(10)):
        got = analysis.loss_change(model, source, deltas)
        assert_close(got["gradient_term"], -g @ d, rtol=1e-4)
        assert_close(got["hessian_term"], 0.5 * d @ h @ d, rtol=1e-4)
        assert_close(got["estimate"], abs(-g @ d + 0.5 * d @ h @ d), rtol=1e-4)


def test_measured_change_and_second_order_accuracy():
    model = tiny_model(3)
    data = tiny_data()
    value, _, _, sizes, loss = explicit(model, data)
    rng = np.random.default_rng(4)
    direction = rng.normal(size=(3, 4)).astype("float32")
    errors = []
    for scale in (0.1, 0.05):
        deltas = {"hidden/kernel": direction * scale}
        got = analysis.loss_change(model, data, deltas)
        d = np.concatenate(
            [deltas["hidden/kernel"].ravel(), np.zeros(sum(sizes) - 12)]
        )
        flat = np.concatenate(
            [v.numpy().ravel() for v in model.trainable_variables]
        )
        expected = abs(loss(tf.constant(flat - d, "float64")).numpy() - value)
        assert_close(got["measured"], expected, rtol=1e-3)
        assert_close(got["loss"], value, rtol=1e-5)
        signed = got["gradient_term"] + got["hessian_term"]
        errors.append(abs(abs(signed) - got["measured"]))
    # Third-order remainder: halving d divides the error by ~8.
    assert errors[1] < errors[0] / 5
    # The caller's model is unchanged.
    assert_close(analysis.mean_loss(model, data), value, 1e-5)


def test_sequential_model_gives_the_functional_models_figures():
    # A cloned Sequential gets a new name, and with it new variable paths:
    # theta - d must still reach the clone's weights.
    functional = tiny_model(5)
    sequential = keras.Sequential(
        [
            keras.Input((3,)),
            keras.layers.Dense(4, activation="tanh", name="hidden"),
            keras.layers.Dense(3, name="logits"),
        ]
    )
    sequential.set_weights(functional.get_weights())
    data = tiny_data()
    direction = np.random.default_rng(6).normal(size=(3, 4)) * 0.1
    kernel = [v.path for v in sequential.weights if "hidden/kernel" in v.path]
    got = analysis.loss_change(
        sequential, data, {kernel[0]: direction.astype("float32")}
    )
    want = analysis.loss_change(
        functional, data, {"hidden/kernel": direction.astype("float32")}
    )
    assert got["measured"] > 1e-4
    for key in ("loss", "gradient_term", "hessian_term", "measured"):
        assert_close(got[key], want[key], rtol=1e-5)


def test_hessian_block_and_theta_h_theta():
    model = tiny_model()
    data = tiny_data()
    _, _, h, _, _ = explicit(model, data)
    indices = [0, 5, 7, 11]
    block = analysis.hessian_block(model, data, "logits/kernel", indices)
    offset = 12 + 4  # hidden kernel and bias come first
    expected = h[np.ix_(np.add(indices, offset), np.add(indices, offset))]
    assert_close(block, expected, rtol=1e-4, atol=1e-7)
    matrix, order = analysis.theta_h_theta(
        model, data, "hidden/kernel", np.arange(12)
    )
    theta = model.get_layer("hidden").kernel.numpy().ravel()
    assert list(np.abs(theta[order])) == sorted(np.abs(theta), reverse=True)
    sub = h[np.ix_(order, order)]
    assert_close(
        matrix, theta[order][:, None] * sub * theta[order][None, :], 1e-4, 1e-7
    )


def test_pruning_delta_and_plot(tmp_path):
    model = tiny_model()
    deltas = analysis.pruning_delta(model, 0.5)
    assert list(deltas) == ["hidden/kernel"]  # the logits are not pruned
    kernel = model.get_layer("hidden").kernel.numpy()
    d = deltas["hidden/kernel"]
    # floor(0.5 * 3) = 1 weight per column: the lowest |w|, its value.
    assert (d != 0).sum(axis=0).tolist() == [1, 1, 1, 1]
    lowest = np.argmin(np.abs(kernel), axis=0)
    np.testing.assert_array_equal(d[lowest, range(4)], kernel[lowest, range(4)])
    path = tmp_path / "fig1.png"
    analysis.plot_theta_h_theta(
        [np.eye(4), -np.eye(4)], str(path), kept=1, titles=["a", "b"]
    )
    assert path.stat().st_size > 1000


def test_bad_paths_raise():
    model = tiny_model()
    with pytest.raises(ValueError, match="Received: \\['nope/kernel'\\]"):
        analysis.loss_change(model, tiny_data(), {"nope/kernel": np.zeros(1)})
    with pytest.raises(ValueError, match="Received: indices="):
        analysis.hessian_block(model, tiny_data(), "hidden/kernel", [12])
