"""With a seed, separate processes draw the same masks and train the same
weights on the TensorFlow CPU backend.

Each run sets `keras.utils.set_random_seed(seed)` and
`tf.config.experimental.enable_op_determinism()`; the layers get no seeds of
their own, so their generators take them from the global seed.
"""

import os
import subprocess
import sys

import keras
import numpy as np
import pytest

WORKER = os.path.join(os.path.dirname(__file__), "determinism_worker.py")
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(WORKER)))

pytestmark = pytest.mark.skipif(
    keras.backend.backend() != "tensorflow",
    reason="checked on the TensorFlow CPU backend",
)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("determinism")
    jobs = {"a": 7, "b": 7, "other": 8}
    env = dict(os.environ, KERAS_BACKEND="tensorflow", TF_CPP_MIN_LOG_LEVEL="2")
    procs = {
        name: subprocess.Popen(
            [sys.executable, WORKER, str(seed), str(tmp / f"{name}.npz")],
            env=env,
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        for name, seed in jobs.items()
    }
    found = {}
    for name, proc in procs.items():
        try:
            output, _ = proc.communicate(timeout=900)
        except subprocess.TimeoutExpired:
            proc.kill()
            output, _ = proc.communicate()
        path = tmp / f"{name}.npz"
        if proc.returncode != 0 or not path.exists():
            pytest.fail(f"{name}: exit {proc.returncode}\n{output[-3000:]}")
        with np.load(path) as data:
            found[name] = dict(data)
    return found


def test_same_seed_same_masks_and_weights(runs):
    a, b = runs["a"], runs["b"]
    assert a.keys() == b.keys()
    for key in a:
        np.testing.assert_array_equal(a[key], b[key], err_msg=key)
    # The three training draws differ from each other (fresh noise per step).
    assert not np.array_equal(a["drawn1"], a["drawn2"])
    assert np.any(a["drawn1"] == 0) and np.any(a["drawn1"] != 0)
    assert any(key.startswith("mask:") for key in a)


def test_another_seed_gives_other_masks_and_weights(runs):
    a, other = runs["a"], runs["other"]
    assert not np.array_equal(a["drawn1"], other["drawn1"])
    assert not np.array_equal(a["drawn0"], other["drawn0"])  # the init
    kernels = [k for k in a if k.startswith("weight") and a[k].ndim == 2]
    assert kernels and all(not np.array_equal(a[k], other[k]) for k in kernels)
