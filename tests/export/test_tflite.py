import os
import stat

import keras
import numpy as np
import pytest
import tensorflow as tf
from ai_edge_litert.interpreter import OpResolverType

from keras_tdrop import ModelTargetedDropout
from keras_tdrop.export import conversion
from keras_tdrop.export import to_tflite
from keras_tdrop.pruning import prune
from tests.export.helpers import images
from tests.export.helpers import run_file
from tests.export.helpers import small_cnn
from tests.export.helpers import small_mlp
from tests.tolerance import approx
from tests.tolerance import assert_close


def test_float_export_matches_keras(tmp_path):
    model = small_cnn()
    x = images().astype("float32")
    path = tmp_path / "float.tflite"
    result = to_tflite(model, path, sample=x)
    assert result.path == str(path)
    assert result.bytes == os.path.getsize(path)
    assert result.batch_size == 32 and result.quantize is None
    assert result.op_resolver == "AUTO"
    dtype, y = run_file(path, x)
    expected = model.predict(x, verbose=0)
    assert dtype == np.float32
    assert_close(y, expected, atol=1e-5)
    assert_close(result.max_abs_diff, np.abs(y - expected).max(), atol=1e-6)
    span = expected.max() - expected.min()
    assert result.tolerance == approx(1e-4 * span)
    assert str(path) in str(result) and f"{result.bytes:,} bytes" in str(result)
    assert os.listdir(tmp_path) == ["float.tflite"]


def test_sparse_export_is_smaller_and_matches(tmp_path):
    pruned = prune(small_cnn(), 0.9, exclude=["conv"])
    x = images().astype("float32")
    dense = to_tflite(pruned, tmp_path / "dense.tflite", sample=x)
    sparse = to_tflite(pruned, tmp_path / "sparse.tflite", sparse=True)
    # fc holds 9,216 of the 9,925 parameters; 90% of them are zero.
    assert sparse.bytes < 0.4 * dense.bytes
    assert sparse.sparse and sparse.batch_size == 16
    _, y = run_file(tmp_path / "sparse.tflite", x)
    assert_close(y, pruned.predict(x, verbose=0), atol=1e-5)


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
    _, y = run_file(tmp_path / "sparse.tflite", x)
    assert_close(y, pruned.predict(x, verbose=0), atol=1e-5)


def test_int8_export_within_stated_tolerance(tmp_path):
    model = small_cnn()
    x = images(64).astype("float32")
    data = tf.data.Dataset.from_tensor_slices((x, np.zeros(64))).batch(8)
    path = tmp_path / "int8.tflite"
    result = to_tflite(model, path, quantize="int8", representative_data=data)
    assert result.batch_size == 16
    dtype, y = run_file(path, x[:16])
    expected = model.predict(x[:16], verbose=0)
    span = expected.max() - expected.min()
    assert dtype == np.int8
    assert result.relative_tolerance == 0.05
    assert result.output_range == approx(span, rel=1e-6)
    diff = np.abs(y - expected).max()
    assert diff <= 0.05 * span
    assert result.max_abs_diff == approx(diff, abs=1e-6)
    # Quantized, not a float model in disguise: the error is visible.
    assert diff > 1e-4 * span


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
        tmp_path / "s.tflite",
        x[:16],
        OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES,
    )
    expected = pruned.predict(x[:16], verbose=0)
    assert np.abs(y - expected).max() <= 0.05 * both.output_range
    # XNNPACK refuses the file: the check ran without default delegates.
    assert both.op_resolver == "BUILTIN_WITHOUT_DEFAULT_DELEGATES"


def test_not_timed_unless_asked(tmp_path, counting):
    model = small_mlp()
    result = to_tflite(model, tmp_path / "m.tflite")
    # One interpreter, invoked once: the check on the sample batch.
    assert counting.created == ["AUTO"] and counting.invocations == 1
    assert result.latency_ms is None
    assert "ms per batch" not in str(result)
    counting.reset()
    timed = to_tflite(model, tmp_path / "m.tflite", repeats=3)
    assert counting.created == ["AUTO"] and counting.invocations == 1 + 3
    assert timed.latency_ms > 0
    assert f"{timed.latency_ms:.3f} ms per batch of 16" in str(timed)


def _mode(path):
    return stat.S_IMODE(os.stat(path).st_mode)


def test_written_file_has_open_permissions_and_umask_is_kept(tmp_path):
    model = small_mlp()
    old = os.umask(0o027)
    try:
        with open(tmp_path / "plain", "wb") as f:
            f.write(b"x")
        to_tflite(model, tmp_path / "m.tflite")
        assert os.umask(0o027) == 0o027
    finally:
        os.umask(old)
    assert _mode(tmp_path / "m.tflite") == _mode(tmp_path / "plain") == 0o640
    assert sorted(os.listdir(tmp_path)) == ["m.tflite", "plain"]


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

    monkeypatch.setattr(os, "replace", failing_replace)
    with pytest.raises(OSError, match="disk full"):
        to_tflite(small_mlp(), path)
    assert path.read_bytes() == b"previous"
    assert os.listdir(tmp_path) == ["model.tflite"]


@pytest.fixture
def no_conversion(monkeypatch):
    def fail(*args, **kwargs):
        raise AssertionError("converted despite bad input")

    monkeypatch.setattr(conversion, "convert", fail)


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        ({"quantize": "int4"}, ValueError, "quantize='int4'"),
        ({"quantize": "int8"}, ValueError, "representative_data=None"),
        ({"sparse": "yes"}, TypeError, "sparse='yes'"),
        ({"repeats": 0}, ValueError, "repeats=0"),
        ({"repeats": True}, ValueError, "repeats=True"),
        ({"sample_size": 0}, ValueError, "sample_size=0"),
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
    with pytest.raises(TypeError, match="path=3"):
        to_tflite(small_cnn(), 3)
    with pytest.raises(ValueError, match=r"does not fit input 'image'"):
        to_tflite(small_cnn(), tmp_path / "m.tflite", sample=np.ones((2, 5)))
    monkeypatch.setattr(keras.backend, "backend", lambda: "jax")
    with pytest.raises(RuntimeError, match="backend='jax'"):
        to_tflite(small_cnn(), tmp_path / "m.tflite")
    assert os.listdir(tmp_path) == []
