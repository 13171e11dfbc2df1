"""Models with keras_tdrop layers load with `safe_mode=True` (no lambdas, no
pickled code). Backend-agnostic."""

import json
import zipfile

import keras
import numpy as np
import pytest
from keras import ops

import keras_tdrop
from keras_tdrop import TargetedDropout
from keras_tdrop import TriangularDropout
from keras_tdrop import apply_targeted_dropout
from tests.tolerance import approx

L = keras.layers


def every_layer_model():
    keras.utils.set_random_seed(0)
    image = keras.Input((8, 8, 2), name="image")
    x = TargetedDropout(
        L.Conv2D(4, 3, activation="relu"), 0.5, 0.5, "unit", "t2t", seed=1
    )(image)
    x = TargetedDropout(L.DepthwiseConv2D(3), 0.3, 0.6, seed=2)(x)
    x = L.Reshape((16, 4))(x)
    x = TargetedDropout(
        L.MultiHeadAttention(2, 4), 0.5, 0.5, reference="for_ai", seed=3
    )(x, x)
    x = L.Flatten()(x)
    x = TargetedDropout(L.Dense(8), keep_per_column=16, seed=4)(x)
    x = TriangularDropout(mode="random", unmasked_rate=0.25, width=6, seed=5)(x)
    outputs = L.Dense(3, name="logits")(x)
    return keras.Model(image, outputs)


def wrapped_model():
    keras.utils.set_random_seed(0)
    inputs = keras.Input((6,))
    x = L.Dense(8, activation="relu", name="fc1")(inputs)
    x = L.Dense(8, activation="relu", name="fc2")(x)
    plain = keras.Model(inputs, L.Dense(2, name="logits")(x))
    return apply_targeted_dropout(plain, 0.5, 0.75, seed=0)


@pytest.mark.parametrize("build", [every_layer_model, wrapped_model])
def test_loads_with_safe_mode(tmp_path, build):
    model = build()
    shape = (2,) + tuple(model.input.shape[1:])
    x = np.random.default_rng(0).normal(size=shape).astype("float32")
    for layer in keras_tdrop.targeted_dropout_layers(model):
        layer.set_rates(0.25, 0.4)
    expected = ops.convert_to_numpy(model(x, training=False))
    path = tmp_path / "model.keras"
    model.save(path)
    with zipfile.ZipFile(path) as archive:
        config = archive.read("config.json").decode()
    assert "lambda" not in config.lower()
    json.loads(config)  # plain JSON: nothing pickled
    loaded = keras.saving.load_model(path, safe_mode=True)
    np.testing.assert_array_equal(
        ops.convert_to_numpy(loaded(x, training=False)), expected
    )
    for layer in keras_tdrop.targeted_dropout_layers(loaded):
        assert (layer.current_rate, layer.current_target_rate) == (
            approx(0.25),
            approx(0.4),
        )
    assert [type(layer) for layer in loaded.layers] == [
        type(layer) for layer in model.layers
    ]


def test_safe_mode_is_enforced_here(tmp_path):
    # The check above could fail: a Lambda is refused in safe mode.
    inputs = keras.Input((3,))
    model = keras.Model(inputs, L.Lambda(lambda t: t * 2)(inputs))
    path = tmp_path / "lambda.keras"
    model.save(path)
    with pytest.raises(ValueError, match="safe_mode"):
        keras.saving.load_model(path, safe_mode=True)
