import pathlib

import numpy as np
import pytest

import keras_tdrop
from keras_tdrop.export import predict_tflite
from keras_tdrop.export import tflite_latency
from keras_tdrop.export import to_tflite
from keras_tdrop.export.interpreter import open_interpreter
from tests.export.helpers import images
from tests.export.helpers import run_file
from tests.export.helpers import small_cnn
from tests.export.helpers import small_mlp
from tests.tolerance import assert_close

FALLBACK = ["AUTO", "BUILTIN_WITHOUT_DEFAULT_DELEGATES"]


@pytest.fixture(scope="module")
def int8_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("int8") / "int8.tflite"
    x = images(64).astype("float32")
    to_tflite(small_cnn(), path, quantize="int8", representative_data=x)
    return path, x[:16]


def test_predict_quantizes_and_batches_like_a_hand_run(int8_file):
    path, x = int8_file
    _, expected = run_file(path, x)
    # 16 rows in batches of 5, 5, 5, 1: the tensors are resized twice.
    assert_close(
        predict_tflite(str(path), x, batch_size=5), expected, atol=1e-6
    )
    assert_close(predict_tflite(path.read_bytes(), x), expected, atol=1e-6)


def test_latency_runs_the_batch_once_then_the_repeats(int8_file, counting):
    path, x = int8_file
    assert tflite_latency(str(path), x[:1], repeats=3) > 0
    assert counting.created == ["AUTO"] and counting.invocations == 1 + 3
    with pytest.raises(ValueError, match="repeats=0"):
        tflite_latency(str(path), x[:1], repeats=0)


def test_one_fallback_for_every_interpreter(tmp_path, counting):
    """Where XNNPACK refuses a file, export, prediction and timing all
    retry once without default delegates, through `open_interpreter`."""
    model = small_mlp()
    x = np.random.default_rng(0).normal(size=(4, 6)).astype("float32")
    counting.reset(refuse_xnnpack=True)
    result = to_tflite(model, tmp_path / "m.tflite", sample=x)
    assert result.op_resolver == FALLBACK[1]
    assert counting.created == FALLBACK and counting.invocations == 1
    counting.reset(refuse_xnnpack=True)
    assert_close(
        predict_tflite(result.path, x), model.predict(x, verbose=0), atol=1e-5
    )
    assert counting.created == FALLBACK
    counting.reset(refuse_xnnpack=True)
    assert tflite_latency(result.path, x, repeats=2) > 0
    assert counting.created == FALLBACK and counting.invocations == 1 + 2
    counting.reset(refuse_xnnpack=True)
    interpreter, resolver, value = open_interpreter(
        result.path, lambda i: i.allocate_tensors() or "ran"
    )
    assert (resolver, value) == (FALLBACK[1], "ran")
    assert isinstance(interpreter, counting)


def test_an_error_after_the_fallback_is_raised(tmp_path, counting):
    path = tmp_path / "m.tflite"
    to_tflite(small_mlp(), path)
    counting.reset()

    def run(interpreter):
        raise RuntimeError("refused by both")

    with pytest.raises(RuntimeError, match="refused by both"):
        open_interpreter(path, run)
    assert counting.created == FALLBACK


def test_interpreters_are_created_in_one_place():
    package = pathlib.Path(keras_tdrop.__file__).parent
    creating = sorted(
        str(p.relative_to(package))
        for p in package.rglob("*.py")
        if "Interpreter(" in p.read_text() or "OpResolverType" in p.read_text()
    )
    assert creating == ["export/interpreter.py"]
