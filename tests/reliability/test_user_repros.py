"""Repros from models written the way published Keras code writes them
(the real-code issue): each failed on the main before its fix."""

import keras
import numpy as np
import pytest

from keras_tdrop import ModelTargetedDropout
from keras_tdrop import apply_targeted_dropout
from keras_tdrop import strip_targeted_dropout
from keras_tdrop.export import predict_tflite
from keras_tdrop.export import to_tflite
from keras_tdrop.pruning import compute_masks
from tests.tolerance import assert_close

L = keras.layers


def test_augmentation_inside_the_model_converts(tmp_path):
    """The verification runs Keras at inference: RandomFlip and
    RandomRotation are the identity there, as in LiteRT."""
    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [
            keras.Input((8, 8, 1)),
            L.RandomFlip(),
            L.RandomRotation(0.2),
            L.Flatten(),
            L.Dense(3),
        ]
    )
    x = np.random.default_rng(0).normal(size=(16, 8, 8, 1)).astype("float32")
    path = str(tmp_path / "augment.tflite")
    to_tflite(model, path, sample=x)
    expected = keras.ops.convert_to_numpy(model(x, training=False))
    assert_close(predict_tflite(path, x), expected, rtol=1e-5, atol=1e-5)


def small_cnn():
    keras.utils.set_random_seed(0)
    inputs = keras.Input((8, 8, 3))
    x = L.Conv2D(4, 3, name="stem")(inputs)
    x = L.Conv2D(8, 1, name="a")(x)
    x = L.GlobalAveragePooling2D()(x)
    return keras.Model(inputs, L.Dense(3, name="logits")(x), name="cnn")


def test_group_masks_refuse_a_wrapped_model_instead_of_returning_nothing():
    model = small_cnn()
    wrapped = apply_targeted_dropout(model, targeting="unit")
    with pytest.raises(ValueError, match=r"strip_targeted_dropout\(model\)"):
        compute_masks(wrapped, 0.5, targeting="unit", groups=True)
    stripped = strip_targeted_dropout(wrapped)
    masks = compute_masks(stripped, 0.5, targeting="unit", groups=True)
    assert int((masks["a/kernel"] == 0).all(axis=(0, 1, 2)).sum()) == 4
    grouped = ModelTargetedDropout(model, targeting="unit", groups=True)
    with pytest.raises(ValueError, match=r"pass `model.model`"):
        compute_masks(grouped, 0.5, targeting="unit", groups=True)
