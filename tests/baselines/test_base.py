"""What every baseline wrapper shares: apply, strip, export, save/load."""

import functools

import keras
import numpy as np
import pytest
from keras import ops

from keras_tdrop import baselines
from keras_tdrop.pruning import compute_masks
from keras_tdrop.pruning import prune_sweep
from keras_tdrop.wrapping import clone_with_weights
from tests.tolerance import approx
from tests.tolerance import assert_close

METHODS = {
    "l0_weight": lambda m, **kw: baselines.apply_l0(m, seed=1, **kw),
    "l0_unit": lambda m, **kw: baselines.apply_l0(
        m, targeting="unit", seed=1, **kw
    ),
    "variational": lambda m, **kw: baselines.apply_variational_dropout(
        m, seed=1, **kw
    ),
    "smallify": lambda m, **kw: baselines.apply_smallify(m, **kw),
}


def cnn():
    inputs = keras.Input((8, 8, 1), name="image")
    x = keras.layers.Conv2D(4, 3, activation="relu", name="stem")(inputs)
    x = keras.layers.Conv2D(6, 3, activation="relu", name="conv2")(x)
    x = keras.layers.Flatten(name="flatten")(x)
    x = keras.layers.Dense(12, activation="relu", name="fc1")(x)
    outputs = keras.layers.Dense(3, name="logits")(x)
    return keras.Model(inputs, outputs)


RNG = np.random.default_rng(0)
X = RNG.normal(size=(32, 8, 8, 1)).astype("float32")
Y = RNG.integers(0, 3, size=32)


@functools.lru_cache(maxsize=None)
def trained(name):
    """A wrapped cnn after a few steps, with its gates moved off their
    initial values so that strip and export have something to fold. Shared
    by the tests, which do not modify it."""
    wrapped = METHODS[name](cnn())
    for layer in baselines.baseline_layers(wrapped):
        for variable in layer.trainable_variables:
            if variable.path.startswith(layer.name + "/"):
                noise = RNG.normal(0, 2, size=variable.shape)
                if "switch" in variable.path:
                    noise = 1 + noise / 4
                elif "log_sigma2" in variable.path:
                    noise = noise - 6
                variable.assign(noise.astype("float32"))
    wrapped.compile(
        "adam",
        keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    wrapped.fit(X, Y, epochs=1, batch_size=8, verbose=0)
    return wrapped


def weights_of(model):
    return {v.path: ops.convert_to_numpy(v).copy() for v in model.weights}


LAYER_NAMES = ["image", "stem", "conv2", "flatten", "fc1", "logits"]


@pytest.mark.parametrize("name", sorted(METHODS))
def test_apply_wraps_a_copy_and_leaves_logits_and_caller_alone(name):
    model = cnn()
    before = weights_of(model)
    wrapped = METHODS[name](model, exclude=["stem"])
    inner = {layer.layer.name for layer in baselines.baseline_layers(wrapped)}
    assert inner == {"conv2", "fc1"}
    assert [layer.name for layer in model.layers] == LAYER_NAMES
    after = weights_of(model)
    for path in before:
        np.testing.assert_array_equal(before[path], after[path])
    # The wrapped layers start from the original's weights.
    (fc1,) = [
        w.layer
        for w in baselines.baseline_layers(wrapped)
        if w.layer.name == "fc1"
    ]
    np.testing.assert_array_equal(
        ops.convert_to_numpy(fc1.kernel), before["fc1/kernel"]
    )
    # The penalties reach the model's losses.
    wrapped(X[:2])
    assert len(wrapped.losses) == 2


@pytest.mark.parametrize("name", sorted(METHODS))
def test_strip_is_plain_and_computes_the_wrapped_inference(name):
    wrapped = trained(name)
    plain = baselines.strip_baselines(wrapped)
    assert not baselines.baseline_layers(plain)
    assert [layer.name for layer in plain.layers] == LAYER_NAMES
    assert plain.losses == []
    assert_close(
        plain.predict(X, verbose=0),
        wrapped.predict(X, verbose=0),
        rtol=1e-5,
        atol=1e-5,
    )
    # The method's own zeros are in the plain kernels.
    for path, mask in baselines.masks(wrapped).items():
        kernel = ops.convert_to_numpy(
            plain.get_layer(path.split("/")[0]).kernel
        )
        assert np.all(kernel[mask == 0] == 0)


@pytest.mark.parametrize("name", sorted(METHODS))
def test_keras_round_trip_and_config(name, tmp_path):
    wrapped = trained(name)
    path = tmp_path / f"{name}.keras"
    wrapped.save(path)
    loaded = keras.saving.load_model(path)
    assert_close(
        loaded.predict(X, verbose=0), wrapped.predict(X, verbose=0), rtol=1e-6
    )
    for a, b in zip(wrapped.weights, loaded.weights):
        np.testing.assert_array_equal(ops.convert_to_numpy(a), b)
    # Exports are keyed by the plain model's paths, before and after.
    assert baselines.importances(loaded).keys() == {
        "stem/kernel",
        "conv2/kernel",
        "fc1/kernel",
    }
    for key, value in baselines.importances(wrapped).items():
        assert_close(baselines.importances(loaded)[key], value, rtol=1e-6)
    for layer in baselines.baseline_layers(wrapped):
        config = layer.get_config()
        clone = layer.__class__.from_config(config)
        assert clone.get_config() == config
    # Cloning a wrapped model copies the gate parameters too.
    copy = clone_with_weights(wrapped)
    for a, b in zip(wrapped.weights, copy.weights):
        np.testing.assert_array_equal(ops.convert_to_numpy(a), b)


def test_importances_rank_the_pruning_lowest_keep_probability_first():
    wrapped = trained("l0_weight")
    plain = baselines.strip_baselines(wrapped)
    scores = baselines.importances(wrapped)
    masks = compute_masks(plain, 0.5, scores=scores)
    for path, score in scores.items():
        rows = int(np.prod(score.shape[:-1]))
        matrix = score.reshape(rows, -1)
        order = np.argsort(matrix, axis=0, kind="stable")
        expected = np.ones_like(matrix)
        np.put_along_axis(expected, order[: rows // 2], 0, axis=0)
        np.testing.assert_array_equal(
            masks[path].reshape(rows, -1), expected, err_msg=path
        )
    rows = prune_sweep(plain, (X, Y), fractions=(0.0, 0.5), scores=scores)
    assert [r["fraction"] for r in rows] == [0.0, 0.5]
    assert rows[1]["sparsity"] == approx(0.5, abs=0.02)


def test_bad_models_and_layers_are_refused():
    class Sub(keras.Model):
        def call(self, x):
            return x

    with pytest.raises(ValueError, match="subclassed"):
        baselines.apply_l0(Sub())
    with pytest.raises(TypeError, match="layer="):
        baselines.L0Gate("dense")
    with pytest.raises(ValueError, match="Smallify works on Dense"):
        baselines.Smallify(keras.layers.DepthwiseConv2D(3))
