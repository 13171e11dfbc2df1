"""Shared checks of the channel-graph tests: group masks -> shrink ->
equal outputs, exact removal, .keras round trip, LiteRT export."""

import os

import keras
import numpy as np
from keras import ops

from keras_tdrop.pruning import apply_masks
from keras_tdrop.pruning import compute_masks
from keras_tdrop.pruning import shrink
from tests.tolerance import assert_close


def randomize(model, seed=0):
    """Random weights with live BatchNorm statistics (so that a pruned
    channel's constant is not zero by accident)."""
    rng = np.random.default_rng(seed)
    for v in model.weights:
        if "int" in str(v.dtype) or v.name in ("count", "seed_generator_state"):
            continue
        scale = 0.3 if len(v.shape) > 1 else 0.5
        value = rng.normal(scale=scale, size=v.shape)
        if "variance" in v.name:
            value = np.abs(value) + 0.5
        v.assign(value.astype(v.dtype))
    return model


def perturb_norms(model, seed=0):
    """Moves every normalization off its identity initialisation (beta,
    gamma, moving statistics), so that a pruned channel's constant output
    is not zero by accident; kernels keep their initialisers."""
    rng = np.random.default_rng(seed)
    for v in model.weights:
        if v.name in ("beta", "moving_mean"):
            v.assign(rng.normal(scale=0.5, size=v.shape).astype(v.dtype))
        elif v.name == "gamma":
            v.assign((1 + rng.normal(scale=0.1, size=v.shape)).astype(v.dtype))
        elif v.name == "moving_variance":
            v.assign((0.5 + rng.random(size=v.shape)).astype(v.dtype))
    return model


def sample(model, batch=2, seed=1):
    rng = np.random.default_rng(seed)
    values = []
    for tensor in model.inputs:
        shape = (batch,) + tuple(
            8 if d is None else d for d in tensor.shape[1:]
        )
        if "int" in str(tensor.dtype):
            values.append(rng.integers(0, 20, shape).astype(tensor.dtype))
        else:
            values.append(rng.normal(size=shape).astype(tensor.dtype))
    return values if len(values) > 1 else values[0]


def outputs(model, x):
    return [
        ops.convert_to_numpy(y)
        for y in keras.tree.flatten(model(x, training=False))
    ]


def weights_of(model):
    return [ops.convert_to_numpy(v).copy() for v in model.weights]


def zeroed_columns(masks):
    """Output columns (last axis) that a mask zeroes entirely."""
    return sum(
        int(np.sum(~m.reshape(-1, m.shape[-1]).any(axis=0)))
        for m in masks.values()
    )


def check_group_shrink(model, fraction, tmp_path=None, x=None, atol=1e-5):
    """Group masks at `fraction` -> shrink: asserts exact removal and equal
    outputs; with `tmp_path`, the .keras round trip and the LiteRT-checked
    TFLite export too. Returns `(small, report, masks)`."""
    before = weights_of(model)
    masks = compute_masks(model, fraction, targeting="unit", groups=True)
    small, report = shrink(model, masks)
    assert fraction == 0 or report.zeroed > 0
    assert report.removed >= 0.99 * report.zeroed, list(report)
    x = sample(model) if x is None else x
    masked = apply_masks(model, masks)
    scale = 1.0
    for a, b in zip(outputs(masked, x), outputs(small, x)):
        scale = max(scale, float(np.abs(a).max()))
        assert_close(b, a, rtol=atol, atol=atol * scale)
    assert report.max_abs_diff <= atol * scale
    if fraction > 0:
        assert small.count_params() < model.count_params()
    # The caller's model is untouched.
    for a, b in zip(before, weights_of(model)):
        np.testing.assert_array_equal(a, b)
    if tmp_path is not None:
        path = os.path.join(tmp_path, "small.keras")
        small.save(path)
        loaded = keras.saving.load_model(path)
        for a, b in zip(outputs(small, x), outputs(loaded, x)):
            np.testing.assert_array_equal(a, b)
        if keras.backend.backend() == "tensorflow":
            from keras_tdrop.export import to_tflite

            result = to_tflite(
                small, os.path.join(tmp_path, "small.tflite"), repeats=1
            )
            assert os.path.getsize(result.path) > 0
    return small, report, masks


def built_subclassed():
    """A built subclassed model (one Dense): no graph to walk."""

    class Net(keras.Model):
        def __init__(self):
            super().__init__()
            self.dense = keras.layers.Dense(4)

        def call(self, x):
            return self.dense(x)

    net = Net()
    net(np.zeros((1, 3), "float32"))
    return net
