"""Mixed precision: masks from the float32 variables, outputs in the compute
dtype, no NaN from ties or rounding. Backend-agnostic."""

import keras
import numpy as np
import pytest
from keras import ops

from keras_tdrop import RampingCallback
from keras_tdrop import TargetedDropout
from keras_tdrop import TriangularDropout
from keras_tdrop import apply_targeted_dropout
from keras_tdrop.pruning import compute_masks
from tests.tolerance import approx

POLICIES = {"mixed_float16": "float16", "mixed_bfloat16": "bfloat16"}

# Distinct in float32, equal once rounded to 16 bits: a mask chosen from the
# autocast kernel would see ties and break them by index (rows 0 and 1).
NEAR_TIES = {
    "mixed_float16": np.array([1.0003, 1.0002, 1.0001, 1.0], "float32"),
    "mixed_bfloat16": np.array([1.003, 1.002, 1.001, 1.0], "float32"),
}


@pytest.fixture
def policy(request):
    name = request.param
    keras.config.set_dtype_policy(name)
    try:
        yield name
    finally:
        keras.config.set_dtype_policy("float32")


def near_tie_kernel(name):
    column = NEAR_TIES[name]
    assert len(set(column.astype(POLICIES[name]).tolist())) == 1
    return np.stack([column, column[::-1]], axis=1)


def wrapped(kernel, **kwargs):
    dense = keras.layers.Dense(kernel.shape[1], use_bias=False)
    dense.build((None, kernel.shape[0]))
    dense.kernel.assign(kernel)
    return TargetedDropout(dense, **kwargs)


@pytest.mark.parametrize("policy", list(POLICIES), indirect=True)
@pytest.mark.parametrize("reference", [None, "t2t", "for_ai"])
@pytest.mark.parametrize("fill", [0.0, 1.0, 1e-9])
@pytest.mark.parametrize("rate", [0.5, 1.0])
def test_outputs_in_compute_dtype_without_nan(policy, reference, fill, rate):
    # All-equal and all-zero kernels (ties everywhere), and 1e-9, which
    # rounds to 0 in float16; at rate 1 the t2t scale 1/(1-rate) is huge:
    # computed in 16 bits it would give inf * 0 = NaN.
    kernel = np.full((6, 3), fill, "float32")
    layer = wrapped(kernel, rate=rate, target_rate=0.5, reference=reference)
    x = np.eye(6, dtype="float32")
    for training in (True, False):
        out = layer(x, training=training)
        assert keras.backend.standardize_dtype(out.dtype) == POLICIES[policy]
        values = ops.convert_to_numpy(ops.cast(out, "float32"))
        assert not np.any(np.isnan(values))
    assert layer._current_rate.dtype == "float32"
    assert layer._current_target_rate.dtype == "float32"
    assert layer.layer.kernel.dtype == "float32"
    if rate == 1.0 and fill == 1.0 and reference is None:
        # Exactly floor(0.5 * 6) = 3 of every column dropped (ties by index).
        dropped = ops.convert_to_numpy(layer(x, training=True)) == 0
        assert dropped.sum(axis=0).tolist() == [3, 3, 3]


@pytest.mark.parametrize("policy", list(POLICIES), indirect=True)
def test_training_masks_come_from_the_float32_kernel(policy):
    layer = wrapped(near_tie_kernel(policy), rate=1.0, target_rate=0.5)
    out = ops.convert_to_numpy(
        ops.cast(layer(np.eye(4, dtype="float32"), training=True), "float32")
    )
    # Column 0 descends: rows 2, 3 are its lowest; column 1 ascends.
    assert (out == 0).tolist() == [
        [False, True],
        [False, True],
        [True, False],
        [True, False],
    ]


@pytest.mark.parametrize("policy", list(POLICIES), indirect=True)
def test_pruning_masks_come_from_the_float32_kernel(policy):
    inputs = keras.Input((4,))
    x = keras.layers.Dense(2, use_bias=False, name="fc")(inputs)
    model = keras.Model(inputs, keras.layers.Dense(1, name="logits")(x))
    model.get_layer("fc").kernel.assign(near_tie_kernel(policy))
    masks = compute_masks(model, 0.5)
    mask = masks[model.get_layer("fc").kernel.path]
    assert mask.dtype == np.float32
    assert mask.tolist() == [[1, 0], [1, 0], [0, 1], [0, 1]]


@pytest.mark.parametrize("policy", list(POLICIES), indirect=True)
def test_triangular_dropout_keeps_the_compute_dtype(policy):
    layer = TriangularDropout()
    out = layer(np.ones((4, 4), "float32"), training=True)
    assert keras.backend.standardize_dtype(out.dtype) == POLICIES[policy]
    assert ops.convert_to_numpy(ops.cast(out, "float32")).tolist() == (
        np.tril(np.ones((4, 4))).tolist()
    )


@pytest.mark.parametrize("policy", list(POLICIES), indirect=True)
def test_fit_with_ramp_under_the_policy(policy):
    keras.utils.set_random_seed(0)
    inputs = keras.Input((8,))
    x = keras.layers.Dense(16, activation="relu", name="fc1")(inputs)
    x = keras.layers.Dense(16, activation="relu", name="fc2")(x)
    x = keras.layers.Dense(3, name="logits")(x)
    outputs = keras.layers.Activation("linear", dtype="float32")(x)
    model = apply_targeted_dropout(
        keras.Model(inputs, outputs), rate=0.5, target_rate=0.5, seed=0
    )
    model.compile(keras.optimizers.SGD(0.05), "mse")
    rng = np.random.default_rng(0)
    x = rng.normal(size=(64, 8)).astype("float32")
    y = rng.normal(size=(64, 3)).astype("float32")
    history = model.fit(
        x,
        y,
        batch_size=16,
        epochs=2,
        verbose=0,
        callbacks=[RampingCallback(ramp_steps=(2, 4))],
    )
    assert np.all(np.isfinite(history.history["loss"]))
    layer = model.get_layer("td_fc1")
    assert layer._current_rate.dtype == "float32"
    assert layer.current_rate == approx(0.5)
    assert layer.current_target_rate == approx(0.5)
    for weight in model.weights:
        if weight.dtype == "float32":
            assert np.all(np.isfinite(ops.convert_to_numpy(weight)))
    assert all(w.dtype == "float32" for w in model.trainable_weights)
