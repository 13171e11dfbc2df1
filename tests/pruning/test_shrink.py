import keras
import numpy as np
import pytest
from keras import ops

from keras_tdrop.pruning import apply_masks
from keras_tdrop.pruning import compute_masks
from keras_tdrop.pruning.shrink import shrink
from keras_tdrop.pruning.unit_removal import remove_units
from tests.tolerance import assert_close

L = keras.layers


def randomize(model, seed=0):
    rng = np.random.default_rng(seed)
    for v in model.weights:
        value = rng.normal(size=v.shape)
        if "variance" in v.name:
            value = np.abs(value) + 0.5
        v.assign(value.astype("float32"))
    return model


def numpy_weights(model):
    return {v.path: ops.convert_to_numpy(v).copy() for v in model.weights}


def assert_same_outputs(a, b, x):
    ya = ops.convert_to_numpy(a(x, training=False))
    yb = ops.convert_to_numpy(b(x, training=False))
    assert_close(ya, yb, rtol=1e-5, atol=1e-5)


def dense_chain():
    inputs = keras.Input((6,), name="features")
    x = L.Dense(8, activation="relu", name="a")(inputs)
    x = L.Dropout(0.5, name="drop")(x)
    x = L.Dense(5, activation="tanh", name="b")(x)
    outputs = L.Dense(3, name="out")(x)
    return randomize(keras.Model(inputs, outputs))


def unit_masks(model, columns):
    """Unit masks zeroing the given columns of the named kernels."""
    masks = {}
    for name, dropped in columns.items():
        kernel = model.get_layer(name).kernel
        mask = np.ones(kernel.shape, "float32")
        mask[..., dropped] = 0.0
        masks[kernel.path] = mask
    return masks


def test_remove_units_dense_chain_matches_numpy():
    model = dense_chain()
    before = numpy_weights(model)
    x = np.random.default_rng(1).normal(size=(16, 6)).astype("float32")
    small, rows = remove_units(
        model, {"a": np.array([0, 2, 3, 7]), "b": np.array([1, 4])}
    )
    assert rows == [
        dict(layer="a", units=8, kept=4, removed=4, refused=0, reason=""),
        dict(layer="b", units=5, kept=2, removed=3, refused=0, reason=""),
    ]
    w = {k.split("/")[0] + k.split("/")[1][0]: v for k, v in before.items()}
    h = np.maximum(x @ w["ak"][:, [0, 2, 3, 7]] + w["ab"][[0, 2, 3, 7]], 0)
    h = np.tanh(h @ w["bk"][[0, 2, 3, 7]][:, [1, 4]] + w["bb"][[1, 4]])
    expected = h @ w["outk"][[1, 4]] + w["outb"]
    assert_close(ops.convert_to_numpy(small(x)), expected, rtol=1e-5, atol=1e-5)
    assert [layer.name for layer in small.layers] == [
        "features",
        "a",
        "drop",
        "b",
        "out",
    ]
    assert small.count_params() == (6 * 4 + 4) + (4 * 2 + 2) + (2 * 3 + 3)
    for v in model.weights:
        np.testing.assert_array_equal(ops.convert_to_numpy(v), before[v.path])


def test_drop_layers_and_sequential():
    model = keras.Sequential(
        [
            keras.Input((4,)),
            L.Dense(6, name="a"),
            L.Dropout(0.3, name="drop"),
            L.Dense(2, name="out"),
        ]
    )
    randomize(model)
    small, _ = remove_units(
        model, {"a": np.arange(3)}, drop_layers=["drop"], strict=True
    )
    assert [layer.name for layer in small.layers][1:] == ["a", "out"]
    x = np.random.default_rng(2).normal(size=(5, 4)).astype("float32")
    weights = [ops.convert_to_numpy(w) for w in model.weights]
    expected = (x @ weights[0][:, :3] + weights[1][:3]) @ weights[2][:3]
    assert_close(
        ops.convert_to_numpy(small(x)), expected + weights[3], rtol=1e-5
    )


def test_shrink_dense_folds_constant_units():
    model = dense_chain()
    # Positive biases: the removed relu units of `a` output a nonzero
    # constant, which only the bias fold keeps in the function.
    model.get_layer("a").bias.assign(np.linspace(0.5, 1.2, 8))
    masks = unit_masks(model, {"a": [1, 4, 5, 6], "b": [0, 3]})
    x = np.random.default_rng(3).normal(size=(32, 6)).astype("float32")
    small, rows = shrink(model, masks)
    assert [(r["group"], r["channels"], r["removed"]) for r in rows] == [
        ("a", 8, 4),
        ("b", 5, 2),
    ]
    assert rows.removed_fraction == 1.0 and rows.max_abs_diff < 1e-5
    assert_same_outputs(small, apply_masks(model, masks), x)
    assert small.get_layer("a").kernel.shape == (6, 4)
    assert small.get_layer("b").kernel.shape == (4, 3)
    assert small.get_layer("out").kernel.shape == (3, 3)
    unfolded, _ = remove_units(
        apply_masks(model, masks),
        {"a": np.array([0, 2, 3, 7]), "b": np.array([1, 2, 4])},
    )
    difference = ops.convert_to_numpy(unfolded(x) - small(x))
    assert np.abs(difference).max() > 1e-2


def conv_bn_model(padding="valid"):
    inputs = keras.Input((10, 10, 3))
    x = L.Conv2D(8, 3, name="c1")(inputs)
    x = L.BatchNormalization(name="bn1")(x)
    x = L.ReLU(name="relu1")(x)
    x = L.MaxPooling2D(name="pool")(x)
    x = L.Conv2D(6, 3, padding=padding, activation="relu", name="c2")(x)
    x = L.Flatten(name="flat")(x)
    x = L.Dense(5, activation="relu", name="fc")(x)
    outputs = L.Dense(3, name="out")(x)
    return randomize(keras.Model(inputs, outputs), seed=4)


def test_shrink_conv_bn_flatten():
    model = conv_bn_model()
    masks = unit_masks(model, {"c1": [0, 5, 6], "c2": [1, 2], "fc": [4]})
    x = np.random.default_rng(5).normal(size=(4, 10, 10, 3)).astype("float32")
    small, rows = shrink(model, masks, strict=True)
    assert [r["removed"] for r in rows] == [3, 2, 1]
    assert_same_outputs(small, apply_masks(model, masks), x)
    kept = [1, 2, 3, 4, 7]
    assert small.get_layer("c1").kernel.shape == (3, 3, 3, 5)
    assert small.get_layer("c2").kernel.shape == (3, 3, 5, 4)
    # conv2 output 2x2x6 flattened: 4 positions x 4 kept channels.
    assert small.get_layer("fc").kernel.shape == (16, 4)
    for name in ("gamma", "beta", "moving_mean", "moving_variance"):
        np.testing.assert_array_equal(
            ops.convert_to_numpy(getattr(small.get_layer("bn1"), name)),
            ops.convert_to_numpy(getattr(model.get_layer("bn1"), name))[kept],
        )


def test_same_padding_keeps_nonzero_constants():
    model = conv_bn_model(padding="same")
    masks = unit_masks(model, {"c1": [0, 5, 6]})
    beta = ops.convert_to_numpy(model.get_layer("bn1").beta).copy()
    beta[[0, 5, 6]] = 100.0
    model.get_layer("bn1").beta.assign(beta)
    # bn1 makes the removed channels positive constants, that a same-padded
    # 3x3 convolution sees unevenly at the borders: refused.
    small, rows = shrink(model, masks)
    assert rows[0]["removed"] == 0 and rows[0]["kept"] == 3
    assert (
        "'c2' (Conv2D) sees the removed channel's constant"
        in (rows[0]["reason"])
    )
    assert rows.removed_fraction == 0.0
    x = np.random.default_rng(6).normal(size=(2, 10, 10, 3)).astype("float32")
    assert_same_outputs(small, apply_masks(model, masks), x)
    with pytest.raises(ValueError, match=r"strict=True.*'c2' \(Conv2D\)"):
        shrink(model, masks, strict=True)
    # approximate=True removes them and measures the error it makes.
    small, rows = shrink(model, masks, approximate=True)
    assert rows[0]["removed"] == 3 and rows[0]["approximated"] == 3
    assert rows.max_abs_diff > 1e-3
    # A constant of zero (beta very negative before the relu) is removable.
    beta[[0, 5, 6]] = -100.0
    model.get_layer("bn1").beta.assign(beta)
    small, rows = shrink(model, masks, strict=True)
    assert rows[0]["removed"] == 3
    assert_same_outputs(small, apply_masks(model, masks), x)


def test_zero_padding_keeps_a_nonzero_constant_exact():
    """A removed channel's constant (its bias) is padded with zeros before
    a valid 3x3 convolution: the consumer sees it unevenly, so folding it
    into the bias would be wrong by up to |bias| * |rows| (28 here)."""
    inputs = keras.Input((6, 6, 2))
    x = L.Conv2D(4, 3, padding="same", name="c1")(inputs)
    x = L.ZeroPadding2D(2, name="pad")(x)
    outputs = L.Conv2D(3, 3, name="c2")(x)
    model = randomize(keras.Model(inputs, outputs), seed=9)
    bias = ops.convert_to_numpy(model.get_layer("c1").bias).copy()
    bias[[0, 2]] = 10.0
    model.get_layer("c1").bias.assign(bias)
    masks = unit_masks(model, {"c1": [0, 2]})
    masked = apply_masks(model, masks)
    small, rows = shrink(model, masks)
    x = np.random.default_rng(10).normal(size=(2, 6, 6, 2)).astype("float32")
    assert_same_outputs(small, masked, x)
    assert rows.max_abs_diff <= 1e-5
    assert rows[0]["kept"] == 2
    assert small.get_layer("c1").kernel.shape[-1] == 4
    # Only a zero constant folds exactly here: it is removed.
    bias[[0, 2]] = 0.0
    model.get_layer("c1").bias.assign(bias)
    small, rows = shrink(model, masks, strict=True)
    assert small.get_layer("c1").kernel.shape[-1] == 2
    assert_same_outputs(small, apply_masks(model, masks), x)


def residual_model():
    inputs = keras.Input((6, 6, 2))
    x = L.Conv2D(4, 3, activation="relu", name="stem")(inputs)
    y = L.Conv2D(4, 1, name="branch")(x)
    y = L.BatchNormalization(name="bn")(y)
    x = L.Add(name="add")([x, y])
    x = L.ReLU(name="relu")(x)
    x = L.GlobalAveragePooling2D(name="gap")(x)
    outputs = L.Dense(2, name="out")(x)
    return randomize(keras.Model(inputs, outputs), seed=7)


def test_residual_block_removes_shared_channels():
    model = residual_model()
    masks = unit_masks(model, {"stem": [1, 3], "branch": [1, 3]})
    small, rows = shrink(model, masks, strict=True)
    # stem and branch feed one Add: one group of 4 channels.
    assert [(r["group"], r["removed"]) for r in rows] == [("stem+branch", 2)]
    assert small.get_layer("out").kernel.shape == (2, 2)
    assert small.get_layer("bn").gamma.shape == (2,)
    x = np.random.default_rng(8).normal(size=(3, 6, 6, 2)).astype("float32")
    assert_same_outputs(small, apply_masks(model, masks), x)


def test_residual_block_refuses_different_channels():
    model = residual_model()
    masks = unit_masks(model, {"stem": [1, 3], "branch": [0, 3]})
    small, rows = shrink(model, masks)
    # Only channel 3 is zero in both branches of the sum; 0 and 1 are
    # zeroed in one branch only, and kept.
    assert [(r["zeroed"], r["removed"], r["kept"]) for r in rows] == [(3, 1, 2)]
    assert (
        "not zeroed in every layer that writes it (branch keeps it)"
        in (rows[0]["reason"])
    )
    assert "(stem keeps it)" in rows[0]["reason"]
    x = np.random.default_rng(9).normal(size=(3, 6, 6, 2)).astype("float32")
    assert_same_outputs(small, apply_masks(model, masks), x)
    with pytest.raises(ValueError, match=r"'add' \(Add\).*different channels"):
        remove_units(
            model,
            {"stem": np.array([0, 2]), "branch": np.array([1, 2])},
            strict=True,
        )


def test_refuses_outputs_and_unsliceable_layers():
    inputs = keras.Input((5,))
    x = L.Dense(6, name="fc")(inputs)
    x = L.LayerNormalization(name="norm")(x)
    outputs = L.Dense(3, name="logits")(x)
    model = randomize(keras.Model(inputs, outputs))
    masks = compute_masks(model, 0.4, "unit", exclude_logits=False)
    small, rows = shrink(model, masks)
    assert [(r["group"], r["zeroed"], r["removed"]) for r in rows] == [
        ("fc", 2, 0),
        ("logits", 1, 0),
    ]
    assert (
        "'norm' (LayerNormalization): it normalizes over the channels"
        in (rows[0]["reason"])
    )
    assert "a model output" in rows[1]["reason"]
    x = np.random.default_rng(10).normal(size=(4, 5)).astype("float32")
    assert_same_outputs(small, apply_masks(model, masks), x)


def test_unit_pruned_mnist_cnn_shrinks_exactly():
    from keras_tdrop.experiments.models import mnist_cnn

    model = randomize(mnist_cnn(filters=(8, 16), units=32), seed=11)
    masks = compute_masks(model, 0.5, "unit", exclude=["stem"])
    small, rows = shrink(model, masks, strict=True)
    assert [(r["group"], r["channels"], r["removed"]) for r in rows] == [
        ("conv2", 16, 8),
        ("fc1", 32, 16),
    ]
    assert small.get_layer("fc1").kernel.shape == (5 * 5 * 8, 16)
    x = np.random.default_rng(12).normal(size=(2, 28, 28, 1)).astype("float32")
    assert_same_outputs(small, apply_masks(model, masks), x)


@pytest.mark.parametrize(
    "keep, drop, match",
    [
        ({"nope": [0]}, (), r"Received: 'nope'"),
        ({"drop": [0]}, (), r"Dense and Conv.*'drop' \(Dropout\)"),
        ({"a": [3, 1]}, (), r"keep\['a'\].*Received: \[3, 1\]"),
        ({"a": [0, 8]}, (), r"\[0, 8\)"),
        ({"a": []}, (), r"non-empty"),
        ({"a": [0.5]}, (), r"ints"),
        ({}, ("ghost",), r"drop_layers.*'ghost'"),
    ],
)
def test_bad_arguments(keep, drop, match):
    with pytest.raises(ValueError, match=match):
        remove_units(dense_chain(), keep, drop_layers=drop)


class Subclassed(keras.Model):
    def __init__(self):
        super().__init__()
        self.fc = L.Dense(3)

    def call(self, x):
        return self.fc(x)


def test_bad_models():
    with pytest.raises(ValueError, match=r"Sequential or functional"):
        shrink(Subclassed())
    with pytest.raises(ValueError, match=r"Sequential or functional"):
        remove_units(keras.Sequential([L.Dense(2)]), {})


def test_bad_types():
    with pytest.raises(TypeError, match=r"keep=list"):
        remove_units(dense_chain(), [1, 2])
    with pytest.raises(TypeError, match=r"model="):
        shrink("model.keras")


def test_bias_free_conv_bn_and_wrapped_model():
    from keras_tdrop import apply_targeted_dropout

    inputs = keras.Input((7, 7, 2))
    x = L.Conv2D(6, 3, use_bias=False, name="c1")(inputs)
    # BatchNormalization turns a removed filter's 0 into a constant.
    x = L.BatchNormalization(name="bn")(x)
    x = L.GlobalMaxPooling2D(name="gmp")(x)
    x = L.Dense(4, use_bias=False, name="fc")(x)
    outputs = L.Dense(2, name="out")(x)
    model = randomize(keras.Model(inputs, outputs), seed=13)
    wrapped = apply_targeted_dropout(model, exclude_logits=True)
    masks = unit_masks(model, {"c1": [0, 2, 3]})
    small, rows = shrink(wrapped, masks, strict=True)
    assert rows[0]["removed"] == 3
    assert all(
        type(layer).__name__ != "TargetedDropout" for layer in small.layers
    )
    # fc had no bias: the folded constants gave it one.
    assert small.get_layer("fc").use_bias
    x = np.random.default_rng(14).normal(size=(3, 7, 7, 2)).astype("float32")
    assert_same_outputs(small, apply_masks(model, masks), x)
