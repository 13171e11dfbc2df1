"""`compute_masks(..., groups=True, importance=...)`: channels ranked by
their group's summed BatchNorm scales (Network Slimming) or magnitudes."""

import keras
import numpy as np
import pytest

from keras_tdrop.pruning import compute_masks

L = keras.layers


def bn_net(seed=0):
    """a -> bn_a -> b -> bn_b2 (a second BN on the same channels) -> logits."""
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((6, 6, 3))
    x = L.Conv2D(4, 3, padding="same", name="stem")(inputs)
    x = L.Conv2D(8, 3, padding="same", use_bias=False, name="a")(x)
    x = L.ReLU()(L.BatchNormalization(name="bn_a")(x))
    x = L.Conv2D(6, 1, use_bias=False, name="b")(x)
    x = L.BatchNormalization(name="bn_b")(x)
    x = L.ReLU()(L.BatchNormalization(name="bn_b2")(x))
    x = L.GlobalAveragePooling2D()(x)
    return keras.Model(inputs, L.Dense(3, name="logits")(x))


def removed(masks, path):
    """The output channels a mask zeroes."""
    mask = masks[path]
    return sorted(np.flatnonzero(mask.reshape(-1, mask.shape[-1]).sum(0) == 0))


def test_bn_scale_removes_the_lowest_summed_gammas():
    model = bn_net()
    rng = np.random.default_rng(0)
    gammas = {}
    for name, n in (("bn_a", 8), ("bn_b", 6), ("bn_b2", 6)):
        gammas[name] = rng.normal(size=n).astype("float32")
        model.get_layer(name).gamma.assign(gammas[name])
    masks = compute_masks(
        model, 0.5, targeting="unit", groups=True, importance="bn_scale"
    )
    # numpy: group a is ranked by |gamma_a|, group b by |gamma_b| + |gamma_b2|
    # (both normalization layers hold its channels); 4 of 8, 3 of 6 go.
    expect_a = sorted(np.argsort(np.abs(gammas["bn_a"]), kind="stable")[:4])
    score_b = np.abs(gammas["bn_b"]) + np.abs(gammas["bn_b2"])
    expect_b = sorted(np.argsort(score_b, kind="stable")[:3])
    assert removed(masks, "a/kernel") == expect_a
    assert removed(masks, "b/kernel") == expect_b
    # The magnitude ranking of the same model chooses otherwise here.
    by_magnitude = compute_masks(model, 0.5, targeting="unit", groups=True)
    assert (
        removed(by_magnitude, "a/kernel") != expect_a
        or removed(by_magnitude, "b/kernel") != expect_b
    )


def test_magnitude_is_the_default():
    model = bn_net()
    default = compute_masks(model, 0.5, targeting="unit", groups=True)
    named = compute_masks(
        model, 0.5, targeting="unit", groups=True, importance="magnitude"
    )
    assert default.keys() == named.keys()
    for path in default:
        np.testing.assert_array_equal(default[path], named[path])


def test_a_group_without_a_scale_falls_back_to_magnitude():
    keras.utils.set_random_seed(1)
    inputs = keras.Input((6, 6, 3))
    x = L.Conv2D(4, 3, padding="same", name="stem")(inputs)
    x = L.BatchNormalization(name="bn_stem")(x)
    x = L.Conv2D(8, 1, activation="relu", name="plain")(x)
    x = L.GlobalAveragePooling2D()(x)
    model = keras.Model(inputs, L.Dense(3, name="logits")(x))
    by_scale = compute_masks(
        model, 0.5, targeting="unit", groups=True, importance="bn_scale"
    )
    by_magnitude = compute_masks(model, 0.5, targeting="unit", groups=True)
    np.testing.assert_array_equal(
        by_scale["plain/kernel"], by_magnitude["plain/kernel"]
    )


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"importance": "taylor"}, "importance='taylor'"),
        ({"importance": "bn_scale", "groups": False}, "needs groups=True"),
        ({"groups": True, "targeting": "weight"}, "targeting='weight'"),
    ],
)
def test_bad_importance(kwargs, match):
    kwargs.setdefault("targeting", "unit")
    with pytest.raises(ValueError, match=match):
        compute_masks(bn_net(), 0.5, **kwargs)


def test_bn_scale_needs_a_normalization_layer():
    inputs = keras.Input((6, 6, 3))
    x = L.Conv2D(4, 3, name="stem")(inputs)
    x = L.Conv2D(8, 1, name="a")(x)
    x = L.GlobalAveragePooling2D()(x)
    model = keras.Model(inputs, L.Dense(3, name="logits")(x), name="no_bn")
    with pytest.raises(ValueError, match="'no_bn' has no normalization"):
        compute_masks(
            model, 0.5, targeting="unit", groups=True, importance="bn_scale"
        )
