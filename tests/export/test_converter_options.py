"""`to_tflite`'s converter options: a U-Net on inputs of unknown size has
ops TFLite has no builtin for; `input_shape` converts it at a fixed size,
`select_tf_ops` keeps them as TF Select ops, and the error names both."""

import math
import os

import keras
import numpy as np
import pytest

from keras_tdrop.export import to_tflite
from keras_tdrop.export.conversion import flex_ops
from tests.export.helpers import Interpreter
from tests.export.helpers import run_file
from tests.export.helpers import small_mlp
from tests.tolerance import assert_close

L = keras.layers


def unet(shape=(None, None, 3)):
    """UpSampling2D and Conv2DTranspose with Concatenate skips."""
    keras.utils.set_random_seed(0)
    inputs = keras.Input(shape, name="image")
    c1 = L.Conv2D(4, 3, padding="same", activation="relu")(inputs)
    c2 = L.Conv2D(8, 3, padding="same", activation="relu")(L.MaxPooling2D()(c1))
    up = L.Conv2DTranspose(4, 2, strides=2, padding="same")(c2)
    c3 = L.Conv2D(4, 3, padding="same")(L.Concatenate()([up, c1]))
    c4 = L.Conv2D(4, 3, padding="same")(L.UpSampling2D()(c2))
    outputs = L.Conv2D(2, 1)(L.Concatenate()([c3, c4]))
    return keras.Model(inputs, outputs, name="unet")


def images(n=4, size=16):
    rng = np.random.default_rng(0)
    return rng.normal(size=(n, size, size, 3)).astype("float32")


def test_unknown_size_unet_fails_naming_both_options(tmp_path):
    path = tmp_path / "unet.tflite"
    with pytest.raises(ValueError) as caught:
        to_tflite(unet(), path, sample=images())
    message = str(caught.value)
    assert "model 'unet'" in message and "Conv2D" in message
    assert "'image' (None, None, None, 3)" in message
    assert "`input_shape=`" in message and "`select_tf_ops=True`" in message
    assert caught.value.__context__ is None  # not the converter's dump
    assert not path.exists()


def test_input_shape_converts_the_unet_at_a_fixed_size(tmp_path):
    model = unet()
    x = images()
    result = to_tflite(model, tmp_path / "unet.tflite", input_shape=(16, 16, 3))
    assert result.verified and result.max_abs_diff <= result.tolerance
    # The default sample has the fixed shape; the batch axis stays free.
    assert result.batch_size == 16
    interpreter = Interpreter(model_path=result.path)
    (inp,) = interpreter.get_input_details()
    assert list(inp["shape_signature"]) == [-1, 16, 16, 3]
    _, y = run_file(result.path, x)
    assert_close(y, model.predict(x, verbose=0), atol=1e-5)
    assert flex_ops(open(result.path, "rb").read()) == ()


def test_input_shape_with_quantization_and_several_inputs(tmp_path):
    keras.utils.set_random_seed(0)
    a = keras.Input((None, 4), name="a")
    b = keras.Input((None, 4), name="b")
    h = L.Dense(6, activation="relu")(L.Concatenate()([a, b]))
    model = keras.Model({"a": a, "b": b}, L.GlobalAveragePooling1D()(h))
    rng = np.random.default_rng(1)
    data = {k: rng.normal(size=(8, 5, 4)).astype("float32") for k in "ab"}
    result = to_tflite(
        model,
        tmp_path / "two.tflite",
        input_shape={"a": (5, 4), "b": (5, 4)},
        quantize="dynamic",
        sample=data,
    )
    assert result.verified and result.max_abs_diff <= result.tolerance
    with pytest.raises(ValueError, match=r"`sample` does not fit input 'a'"):
        to_tflite(
            model,
            tmp_path / "bad.tflite",
            input_shape={"a": (3, 4), "b": (3, 4)},
            sample=data,
        )


def test_select_tf_ops_writes_the_file_and_says_it_is_unchecked(tmp_path):
    path = tmp_path / "unet.tflite"
    with pytest.warns(UserWarning, match=r"TF Select ops \(FlexConv2D\)"):
        result = to_tflite(unet(), path, sample=images(), select_tf_ops=True)
    assert not result.verified and math.isnan(result.max_abs_diff)
    assert result.bytes == os.path.getsize(path) and result.latency_ms is None
    assert flex_ops(path.read_bytes()) == ("FlexConv2D",)
    assert "not checked in LiteRT" in str(result)


def test_select_tf_ops_on_a_builtin_model_is_still_checked(tmp_path):
    result = to_tflite(small_mlp(), tmp_path / "mlp.tflite", select_tf_ops=True)
    assert result.verified and result.op_resolver == "AUTO"
    assert result.max_abs_diff <= result.tolerance


@pytest.mark.parametrize(
    "options, match",
    [
        (
            {"input_shape": (16, 16, 4)},
            r"fit its shape \(None, None, None, 3\)",
        ),
        ({"input_shape": (16, 16)}, r"fit its shape"),
        ({"input_shape": (16, 0, 3)}, r"tuple of ints >= 1"),
        ({"input_shape": (16.0, 16, 3)}, r"must be a tuple of ints"),
        ({"input_shape": "16"}, r"must be a tuple of ints"),
        ({"input_shape": {"x": (16, 16, 3)}}, r"one entry per input"),
        ({"select_tf_ops": "yes"}, r"`select_tf_ops` must be a bool"),
        ({"select_tf_ops": 1}, r"`select_tf_ops` must be a bool"),
    ],
)
def test_bad_converter_options_are_named(tmp_path, options, match):
    ((name, value),) = options.items()
    with pytest.raises(ValueError, match=match) as caught:
        to_tflite(unet(), tmp_path / "x.tflite", **options)
    assert f"Received: {name}={value!r}" in str(caught.value)
    assert not os.listdir(tmp_path)
