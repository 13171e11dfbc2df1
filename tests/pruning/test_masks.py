import keras
import numpy as np
import pytest
from keras import ops

from keras_tdrop import apply_targeted_dropout
from keras_tdrop.pruning import apply_masks
from keras_tdrop.pruning import compute_masks
from keras_tdrop.pruning import prune


def model_with_ties():
    inputs = keras.Input((6, 6, 2))
    x = keras.layers.Conv2D(5, 3, name="conv")(inputs)
    x = keras.layers.Flatten()(x)
    x = keras.layers.Dense(12, name="fc")(x)
    outputs = keras.layers.Dense(3, name="logits")(x)
    model = keras.Model(inputs, outputs)
    rng = np.random.default_rng(0)
    for v in model.weights:
        v.assign(rng.integers(-3, 4, size=v.shape).astype("float32"))
    return model


def for_ai_prune(kernel, p, strategy):
    """for-ai/TD scripts/prune, transcribed: idx = int(p * n) lowest."""
    w = kernel.reshape(-1, kernel.shape[-1])
    if strategy == "weight":
        idx = int(p * w.shape[0])
        order = np.argsort(np.abs(w), axis=0, kind="stable")
        keep = np.ones_like(w)
        np.put_along_axis(keep, order[:idx], 0.0, axis=0)
    else:
        idx = int(p * w.shape[1])
        order = np.argsort(np.linalg.norm(w, axis=0), kind="stable")
        keep = np.ones_like(w)
        keep[:, order[:idx]] = 0.0
    return keep.reshape(kernel.shape)


@pytest.mark.parametrize("targeting", ["weight", "unit"])
@pytest.mark.parametrize("fraction", [0.0, 0.1, 0.25, 0.5, 0.8, 0.9, 1.0])
def test_masks_match_reference_counts(targeting, fraction):
    model = model_with_ties()
    masks = compute_masks(model, fraction, targeting)
    assert set(masks) == {"conv/kernel", "fc/kernel"}
    for path, mask in masks.items():
        kernel = ops.convert_to_numpy(
            model.get_layer(path.split("/")[0]).kernel
        )
        assert mask.shape == kernel.shape and mask.dtype == np.float32
        np.testing.assert_array_equal(
            mask, for_ai_prune(kernel, fraction, targeting)
        )
        matrix = mask.reshape(-1, kernel.shape[-1])
        rows, cols = matrix.shape
        if targeting == "weight":
            np.testing.assert_array_equal(
                (matrix == 0).sum(axis=0), int(fraction * rows + 1e-9)
            )
        else:
            assert (matrix == 0).all(axis=0).sum() == int(
                fraction * cols + 1e-9
            )


def test_prune_returns_copy_and_leaves_biases_and_logits():
    model = model_with_ties()
    before = {v.path: ops.convert_to_numpy(v).copy() for v in model.weights}
    pruned = prune(model, 0.5)
    for v in model.weights:
        np.testing.assert_array_equal(ops.convert_to_numpy(v), before[v.path])
    after = {v.path: ops.convert_to_numpy(v) for v in pruned.weights}
    assert after.keys() == before.keys()
    for path in ("conv/bias", "fc/bias", "logits/kernel", "logits/bias"):
        np.testing.assert_array_equal(after[path], before[path])
    conv = after["conv/kernel"].reshape(-1, 5)
    assert ((conv == 0) & (before["conv/kernel"].reshape(-1, 5) != 0)).sum() > 0
    assert (conv == 0).sum(axis=0).min() >= 9  # int(0.5 * 18) removed


def test_apply_masks_inplace_and_validation():
    model = model_with_ties()
    masks = compute_masks(model, 0.3, "unit", exclude=["conv"])
    assert list(masks) == ["fc/kernel"]
    returned = apply_masks(model, masks, inplace=True)
    assert returned is model
    fc = ops.convert_to_numpy(model.get_layer("fc").kernel)
    assert (fc == 0).all(axis=0).sum() >= int(0.3 * 12)
    with pytest.raises(ValueError, match=r"path='nope/kernel'"):
        apply_masks(model, {"nope/kernel": np.ones((2, 2))})
    with pytest.raises(ValueError, match=r"fc/kernel.*shape"):
        apply_masks(model, {"fc/kernel": np.ones((2, 2))})
    with pytest.raises(TypeError, match=r"masks=list"):
        apply_masks(model, [np.ones(2)])


def test_wrapped_model_gives_the_same_masks():
    model = model_with_ties()
    td = apply_targeted_dropout(model, rate=0.5, target_rate=0.5)
    plain_masks = compute_masks(model, 0.7)
    td_masks = compute_masks(td, 0.7)
    assert plain_masks.keys() == td_masks.keys()
    for path in plain_masks:
        np.testing.assert_array_equal(plain_masks[path], td_masks[path])


@pytest.mark.parametrize(
    "fraction, targeting, error, match",
    [
        (1.5, "weight", ValueError, r"fraction=1.5"),
        (-0.1, "weight", ValueError, r"fraction=-0.1"),
        ("half", "weight", TypeError, r"fraction='half'"),
        (0.5, "channel", ValueError, r"targeting='channel'"),
    ],
)
def test_bad_arguments(fraction, targeting, error, match):
    with pytest.raises(error, match=match):
        compute_masks(model_with_ties(), fraction, targeting)


def test_bad_models():
    with pytest.raises(TypeError, match=r"model="):
        compute_masks(np.ones(3), 0.5)
    with pytest.raises(ValueError, match=r"unbuilt"):
        compute_masks(keras.Sequential([keras.layers.Dense(2)]), 0.5)
