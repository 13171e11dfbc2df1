import os

import keras
import numpy as np
import pytest
import tensorflow as tf
from ai_edge_litert.interpreter import Interpreter
from ai_edge_litert.interpreter import OpResolverType

from keras_tdrop import ModelTargetedDropout
from keras_tdrop.export import predict_tflite
from keras_tdrop.export import tflite
from keras_tdrop.export import tflite_latency
from keras_tdrop.export import to_tflite
from keras_tdrop.pruning import prune


def small_cnn(seed=0):
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((12, 12, 1), name="image")
    x = keras.layers.Conv2D(8, 3, name="conv")(inputs)
    x = keras.layers.BatchNormalization(name="bn")(x)
    x = keras.layers.ReLU()(x)
    x = keras.layers.MaxPooling2D()(x)
    x = keras.layers.Flatten()(x)
    x = keras.layers.Dense(64, activation="relu", name="fc")(x)
    outputs = keras.layers.Dense(5, name="logits")(x)
    model = keras.Model(inputs, outputs)
    rng = np.random.default_rng(seed)
    bn = model.get_layer("bn")
    bn.moving_mean.assign(rng.normal(0, 0.1, 8).astype("float32"))
    bn.moving_variance.assign(rng.uniform(0.5, 2, 8).astype("float32"))
    return model


def images(n=32, seed=1):
    return np.random.default_rng(seed).uniform(0, 1, (n, 12, 12, 1))


def run_file(path, x, resolver=OpResolverType.AUTO):
    """An independent LiteRT run of a written file, dequantizing by hand."""
    interpreter = Interpreter(
        model_path=path, experimental_op_resolver_type=resolver
    )
    (inp,) = interpreter.get_input_details()
    interpreter.resize_tensor_input(inp["index"], x.shape)
    interpreter.allocate_tensors()
    (inp,) = interpreter.get_input_details()
    (out,) = interpreter.get_output_details()
    if inp["dtype"] == np.int8:
        scale, zero = inp["quantization"]
        x = np.clip(np.round(x / scale) + zero, -128, 127).astype(np.int8)
    interpreter.set_tensor(inp["index"], x.astype(inp["dtype"]))
    interpreter.invoke()
    y = interpreter.get_tensor(out["index"])
    if out["dtype"] == np.int8:
        scale, zero = out["quantization"]
        y = (y.astype("float32") - zero) * scale
    return inp["dtype"], y


def test_float_export_matches_keras(tmp_path):
    model = small_cnn()
    x = images().astype("float32")
    path = tmp_path / "float.tflite"
    result = to_tflite(model, path, sample=x)
    assert result.path == str(path)
    assert result.bytes == os.path.getsize(path)
    assert result.batch_size == 32 and result.quantize is None
    assert result.latency_ms > 0
    dtype, y = run_file(str(path), x)
    expected = model.predict(x, verbose=0)
    assert dtype == np.float32
    np.testing.assert_allclose(y, expected, atol=1e-5)
    np.testing.assert_allclose(
        result.max_abs_diff, np.abs(y - expected).max(), atol=1e-6
    )
    span = expected.max() - expected.min()
    assert result.tolerance == pytest.approx(1e-4 * span)
    assert str(path) in str(result) and f"{result.bytes:,} bytes" in str(result)
    assert os.listdir(tmp_path) == ["float.tflite"]
    assert tflite_latency(str(path), x[:1], repeats=3) > 0
    with pytest.raises(ValueError, match="repeats=0"):
        tflite_latency(str(path), x[:1], repeats=0)


def test_sparse_export_is_smaller_and_matches(tmp_path):
    pruned = prune(small_cnn(), 0.9, exclude=["conv"])
    x = images().astype("float32")
    dense = to_tflite(pruned, tmp_path / "dense.tflite", sample=x)
    sparse = to_tflite(pruned, tmp_path / "sparse.tflite", sparse=True)
    # fc holds 9,216 of the 9,925 parameters; 90% of them are zero.
    assert sparse.bytes < 0.4 * dense.bytes
    assert sparse.sparse and sparse.batch_size == 16
    _, y = run_file(str(tmp_path / "sparse.tflite"), x)
    np.testing.assert_allclose(y, pruned.predict(x, verbose=0), atol=1e-5)


@keras.saving.register_keras_serializable(package="test_tflite")
class Subclassed(keras.Model):
    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.fc = keras.layers.Dense(64, activation="relu", name="fc")
        self.logits = keras.layers.Dense(5, name="logits")

    def call(self, x):
        return self.logits(self.fc(keras.ops.reshape(x, (-1, 144))))


def test_subclassed_model_from_model_dropout_exports_sparse(tmp_path):
    keras.utils.set_random_seed(0)
    model = Subclassed(name="sub")
    x = images().astype("float32")
    td = ModelTargetedDropout(model, rate=0.5, target_rate=0.9, seed=1)
    td.compile("sgd", "mse")
    td.fit(x, np.zeros((len(x), 5)), batch_size=8, verbose=0)
    pruned = prune(td.model, 0.9)
    dense = to_tflite(pruned, tmp_path / "dense.tflite", sample=x)
    sparse = to_tflite(pruned, tmp_path / "sparse.tflite", sparse=True)
    assert sparse.bytes < 0.4 * dense.bytes
    _, y = run_file(str(tmp_path / "sparse.tflite"), x)
    np.testing.assert_allclose(y, pruned.predict(x, verbose=0), atol=1e-5)


def test_int8_export_within_stated_tolerance(tmp_path):
    model = small_cnn()
    x = images(64).astype("float32")
    data = tf.data.Dataset.from_tensor_slices((x, np.zeros(64))).batch(8)
    path = tmp_path / "int8.tflite"
    result = to_tflite(model, path, quantize="int8", representative_data=data)
    assert result.batch_size == 16
    dtype, y = run_file(str(path), x[:16])
    expected = model.predict(x[:16], verbose=0)
    span = expected.max() - expected.min()
    assert dtype == np.int8
    assert result.relative_tolerance == 0.05
    assert result.output_range == pytest.approx(span, rel=1e-6)
    diff = np.abs(y - expected).max()
    assert diff <= 0.05 * span
    assert result.max_abs_diff == pytest.approx(diff, abs=1e-6)
    # Quantized, not a float model in disguise: the error is visible.
    assert diff > 1e-4 * span
    # predict_tflite quantizes and dequantizes as LiteRT's scales say,
    # batch by batch (16 rows in batches of 5, 5, 5, 1).
    np.testing.assert_allclose(
        predict_tflite(str(path), x[:16], batch_size=5), y, atol=1e-6
    )
    np.testing.assert_allclose(
        predict_tflite(path.read_bytes(), x[:16]), y, atol=1e-6
    )


def test_dynamic_and_sparse_int8(tmp_path):
    pruned = prune(small_cnn(), 0.8, exclude=["conv"])
    x = images().astype("float32")
    dynamic = to_tflite(pruned, tmp_path / "d.tflite", quantize="dynamic")
    assert dynamic.max_abs_diff <= 0.02 * dynamic.output_range
    both = to_tflite(
        pruned,
        tmp_path / "s.tflite",
        sparse=True,
        quantize="int8",
        representative_data=x,
    )
    assert both.bytes < dynamic.bytes
    _, y = run_file(
        str(tmp_path / "s.tflite"),
        x[:16],
        OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES,
    )
    expected = pruned.predict(x[:16], verbose=0)
    assert np.abs(y - expected).max() <= 0.05 * both.output_range
    assert both.op_resolver == "BUILTIN_WITHOUT_DEFAULT_DELEGATES"
    # XNNPACK refuses the file; predict_tflite falls back as to_tflite does.
    np.testing.assert_allclose(
        predict_tflite(str(tmp_path / "s.tflite"), x[:16]), y, atol=1e-6
    )


def test_two_inputs_by_name(tmp_path):
    a = keras.Input((3,), name="a")
    b = keras.Input((4,), name="b")
    x = keras.layers.Concatenate()([keras.layers.Dense(2)(b), a])
    model = keras.Model([a, b], keras.layers.Dense(2)(x))
    rng = np.random.default_rng(0)
    sample = {"b": rng.normal(size=(5, 4)), "a": rng.normal(size=(5, 3))}
    result = to_tflite(model, tmp_path / "two.tflite", sample=sample)
    assert result.max_abs_diff < 1e-5 and result.batch_size == 5


def test_mismatch_writes_nothing_and_keeps_existing_file(tmp_path):
    model = small_cnn()
    path = tmp_path / "model.tflite"
    path.write_bytes(b"previous")
    with pytest.raises(ValueError, match="does not match Keras.*Nothing"):
        to_tflite(model, path, quantize="dynamic", tolerance=1e-9)
    assert path.read_bytes() == b"previous"
    assert os.listdir(tmp_path) == ["model.tflite"]
    with pytest.raises(ValueError, match="does not match Keras"):
        to_tflite(model, tmp_path / "new.tflite", tolerance=1e-12)
    assert os.listdir(tmp_path) == ["model.tflite"]


def test_failed_write_leaves_no_temporary_file(tmp_path, monkeypatch):
    path = tmp_path / "model.tflite"
    path.write_bytes(b"previous")

    def failing_replace(source, target):
        raise OSError("disk full")

    monkeypatch.setattr(tflite.os, "replace", failing_replace)
    with pytest.raises(OSError, match="disk full"):
        to_tflite(small_cnn(), path)
    assert path.read_bytes() == b"previous"
    assert os.listdir(tmp_path) == ["model.tflite"]


@pytest.fixture
def no_conversion(monkeypatch):
    def fail(*args, **kwargs):
        raise AssertionError("converted despite bad input")

    monkeypatch.setattr(tflite, "_convert", fail)


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        ({"quantize": "int4"}, ValueError, "quantize='int4'"),
        ({"quantize": "int8"}, ValueError, "representative_data=None"),
        ({"sparse": "yes"}, TypeError, "sparse='yes'"),
        ({"repeats": 0}, ValueError, "repeats=0"),
        ({"tolerance": -1.0}, ValueError, "tolerance=-1.0"),
    ],
)
def test_bad_options_raise_before_conversion(
    tmp_path, no_conversion, kwargs, error, match
):
    with pytest.raises(error, match=match):
        to_tflite(small_cnn(), tmp_path / "m.tflite", **kwargs)
    assert os.listdir(tmp_path) == []


def test_bad_model_and_path(tmp_path, no_conversion, monkeypatch):
    with pytest.raises(TypeError, match="model=.*Dense"):
        to_tflite(keras.layers.Dense(2), tmp_path / "m.tflite")
    unbuilt = keras.Sequential([keras.layers.Dense(2)])
    with pytest.raises(ValueError, match="unbuilt model"):
        to_tflite(unbuilt, tmp_path / "m.tflite")
    with pytest.raises(FileNotFoundError, match="missing"):
        to_tflite(small_cnn(), tmp_path / "missing" / "m.tflite")
    with pytest.raises(ValueError, match="is a folder"):
        to_tflite(small_cnn(), tmp_path)
    with pytest.raises(ValueError, match=r"does not fit input 'image'"):
        to_tflite(small_cnn(), tmp_path / "m.tflite", sample=np.ones((2, 5)))
    monkeypatch.setattr(keras.backend, "backend", lambda: "jax")
    with pytest.raises(RuntimeError, match="backend='jax'"):
        to_tflite(small_cnn(), tmp_path / "m.tflite")
    assert os.listdir(tmp_path) == []
