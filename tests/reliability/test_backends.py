"""The core on every Keras backend; TensorFlow-only parts say what they need.

CI runs this file (with the other backend-agnostic tests) under
KERAS_BACKEND=tensorflow, jax and torch.
"""

import os
import subprocess
import sys

import keras
import numpy as np
import pytest
from keras import ops

import keras_tdrop
from keras_tdrop import RampingCallback
from keras_tdrop import TriangularDropout
from keras_tdrop.pruning import apply_masks
from keras_tdrop.pruning import compute_masks
from keras_tdrop.pruning.shrink import shrink
from keras_tdrop.truncation import truncate
from tests.tolerance import approx
from tests.tolerance import assert_close

BACKEND = keras.backend.backend()
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(__file__)))
not_tensorflow = pytest.mark.skipif(
    BACKEND == "tensorflow", reason="checks a backend other than tensorflow"
)


def data(n=64):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(n, 10)).astype("float32")
    return x, rng.integers(0, 3, size=n)


def test_the_whole_core_pipeline_on_this_backend():
    keras.utils.set_random_seed(0)
    inputs = keras.Input((10,))
    x = keras.layers.Dense(12, activation="relu", name="fc1")(inputs)
    x = TriangularDropout(name="tri")(x)
    x = keras.layers.Dense(12, activation="relu", name="fc2")(x)
    plain = keras.Model(inputs, keras.layers.Dense(3, name="logits")(x))
    model = keras_tdrop.apply_targeted_dropout(
        plain, rate=0.5, target_rate=0.5, targeting="unit", seed=0
    )
    model.compile(
        keras.optimizers.Adam(0.01),
        "sparse_categorical_crossentropy",
        metrics=["accuracy"],
    )
    x, y = data()
    history = model.fit(
        x,
        y,
        batch_size=12,
        epochs=2,
        verbose=0,
        callbacks=[RampingCallback(ramp_steps=(5, 10))],
    )
    assert history.history["td_rate"][-1] == approx(0.5)
    assert np.all(np.isfinite(history.history["loss"]))

    stripped = keras_tdrop.strip_targeted_dropout(model)
    masks = compute_masks(stripped, 0.5, targeting="unit")
    assert {m.shape[1] - int(m.any(axis=0).sum()) for m in masks.values()} == {
        6
    }
    masked = apply_masks(stripped, masks)
    small, _ = shrink(masked)
    assert_close(
        ops.convert_to_numpy(small(x)),
        ops.convert_to_numpy(masked(x)),
        rtol=1e-5,
        atol=1e-5,
    )
    assert small.count_params() < masked.count_params()

    keras_tdrop.set_width(stripped, 5)
    narrow = truncate(stripped, 5)
    assert_close(
        ops.convert_to_numpy(narrow(x)),
        ops.convert_to_numpy(stripped(x)),
        rtol=1e-5,
        atol=1e-5,
    )
    assert narrow.get_layer("fc1").kernel.shape == (10, 5)


@not_tensorflow
def test_the_core_does_not_import_tensorflow():
    code = (
        "import sys, keras_tdrop, keras_tdrop.pruning.shrink, "
        "keras_tdrop.truncation, keras_tdrop.export, "
        "keras_tdrop.pruning.tfmot_bridge\n"
        "print('tensorflow' in sys.modules)"
    )
    env = dict(os.environ, KERAS_BACKEND=BACKEND)
    out = subprocess.run(
        [sys.executable, "-c", code],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().splitlines()[-1] == "False"


@not_tensorflow
def test_tflite_export_names_the_backend_it_needs(tmp_path):
    from keras_tdrop.export.tflite import to_tflite

    inputs = keras.Input((4,))
    model = keras.Model(inputs, keras.layers.Dense(2)(inputs))
    with pytest.raises(
        RuntimeError, match=rf"TensorFlow backend.*backend='{BACKEND}'"
    ):
        to_tflite(model, tmp_path / "m.tflite")
    assert not list(tmp_path.iterdir())
