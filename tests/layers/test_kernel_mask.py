import keras
import numpy as np
import pytest

from keras_tdrop.experiments.methods import strip_kernel_masks
from keras_tdrop.layers.kernel_mask import FixedMask
from keras_tdrop.layers.kernel_mask import KernelDropout
from keras_tdrop.layers.kernel_mask import random_mask
from tests.tolerance import assert_close


@pytest.mark.parametrize("shape", [(10, 4), (3, 3, 5, 6), (7,)])
@pytest.mark.parametrize("fraction", [0.0, 0.29, 0.5, 0.9, 1.0])
def test_random_mask_exact_counts(shape, fraction):
    rows = int(np.prod(shape[:-1]))
    cols = shape[-1]
    weight = random_mask(shape, fraction, "weight", rng=0)
    assert weight.shape == shape and weight.dtype == np.float32
    assert set(np.unique(weight)) <= {0.0, 1.0}
    zeros = (weight.reshape(rows, cols) == 0).sum(axis=0)
    # 0.29 * 100 style rounding: floor computed as the targeting module does
    assert zeros.tolist() == [int(np.floor(np.float32(fraction) * rows))] * cols
    unit = random_mask(shape, fraction, "unit", rng=0).reshape(rows, cols)
    dropped = np.all(unit == 0, axis=0)
    assert dropped.sum() == int(np.floor(np.float32(fraction) * cols))
    assert np.all(unit[:, ~dropped] == 1)


def test_random_mask_is_random_and_reproducible():
    a = random_mask((100, 50), 0.5, rng=1)
    np.testing.assert_array_equal(a, random_mask((100, 50), 0.5, rng=1))
    assert not np.array_equal(a, random_mask((100, 50), 0.5, rng=2))
    # Every position is removed with probability 1/2 (over 50 columns x
    # 100 draws: mean 0.5, sd 0.0071 per row average of 5000).
    draws = np.mean([random_mask((8, 50), 0.5, rng=i) for i in range(100)], 0)
    assert_close(draws.mean(axis=1), 0.5, atol=0.03)


def test_random_mask_bad_arguments():
    with pytest.raises(ValueError, match="Received: fraction=1.5"):
        random_mask((4, 4), 1.5)
    with pytest.raises(ValueError, match="Received: targeting='row'"):
        random_mask((4, 4), 0.5, "row")


def _dense_pair(seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(5, 6)).astype("float32")
    return x, keras.layers.Dense(4, name="fc")


@pytest.mark.parametrize("targeting", ["weight", "unit"])
def test_fixed_mask_runs_on_masked_kernel(targeting):
    x, dense = _dense_pair()
    layer = FixedMask(dense, 0.5, targeting, seed=3)
    out = layer(x)
    kernel = dense.kernel.numpy()
    mask = layer.masks[0].numpy()
    np.testing.assert_array_equal(
        mask, random_mask((6, 4), 0.5, targeting, np.random.default_rng(3))
    )
    expected = x @ (kernel * mask) + dense.bias.numpy()
    assert_close(out, expected, rtol=1e-5, atol=1e-5)
    assert_close(layer(x, training=True), expected, rtol=1e-5, atol=1e-5)
    # The stored kernel is untouched; the masks are not trainable.
    np.testing.assert_array_equal(dense.kernel.numpy(), kernel)
    assert [w.name for w in layer.trainable_weights] == ["kernel", "bias"]


def test_fixed_mask_trains_only_the_kept_weights():
    x, dense = _dense_pair()
    inputs = keras.Input((6,))
    model = keras.Model(inputs, FixedMask(dense, 0.75, seed=0)(inputs))
    before = dense.kernel.numpy().copy()
    model.compile(keras.optimizers.SGD(0.1), "mse")
    model.fit(x, np.ones((5, 4)), epochs=3, verbose=0)
    mask = model.layers[1].masks[0].numpy()
    after = dense.kernel.numpy()
    np.testing.assert_array_equal(after[mask == 0], before[mask == 0])
    assert np.all(after[mask == 1] != before[mask == 1])
    assert (mask == 0).sum(axis=0).tolist() == [4, 4, 4, 4]  # floor(.75*6)


def test_fixed_mask_save_load_and_strip(tmp_path):
    inputs = keras.Input((3, 3, 2))
    x = FixedMask(keras.layers.Conv2D(4, 2, name="conv"), 0.5, seed=1)(inputs)
    x = keras.layers.Flatten()(x)
    outputs = keras.layers.Dense(2, name="logits")(x)
    model = keras.Model(inputs, outputs)
    data = np.random.default_rng(0).normal(size=(4, 3, 3, 2)).astype("float32")
    expected = model.predict(data, verbose=0)
    path = tmp_path / "m.keras"
    model.save(path)
    loaded = keras.saving.load_model(path)
    assert_close(loaded.predict(data, verbose=0), expected, 1e-5)
    np.testing.assert_array_equal(
        loaded.layers[1].masks[0].numpy(), model.layers[1].masks[0].numpy()
    )
    config = model.layers[1].get_config()
    clone = FixedMask.from_config(config)
    assert clone.fraction == 0.5 and clone.seed == 1
    plain = strip_kernel_masks(model)
    assert [type(layer).__name__ for layer in plain.layers] == [
        "InputLayer",
        "Conv2D",
        "Flatten",
        "Dense",
    ]
    assert_close(plain.predict(data, verbose=0), expected, 1e-5)
    kernel = plain.get_layer("conv").kernel.numpy()
    assert (kernel == 0).sum() == int(0.5 * 8) * 4
    # The caller's wrapped model is unchanged.
    assert type(model.layers[1]).__name__ == "FixedMask"


def test_kernel_dropout_statistics():
    dense = keras.layers.Dense(200, use_bias=False)
    layer = KernelDropout(dense, rate=0.3, seed=0)
    x = np.eye(100, dtype="float32")
    layer(x)
    kernel = dense.kernel.numpy()
    # The identity input reads the (dropped) kernel back.
    out = np.asarray(layer(x, training=True))
    kept = out != 0
    # 20,000 Bernoulli(0.7): sd 0.0032; 4 sd.
    assert abs(kept.mean() - 0.7) < 0.013
    assert_close(out[kept], kernel[kept] / 0.7, rtol=1e-5)
    assert not np.array_equal(kept, np.asarray(layer(x, training=True)) != 0)
    assert_close(layer(x), kernel, rtol=1e-6)


def test_kernel_dropout_unit_drops_whole_columns():
    dense = keras.layers.Dense(400, use_bias=False)
    layer = KernelDropout(dense, rate=0.5, targeting="unit", seed=1)
    x = np.eye(8, dtype="float32")
    layer(x)
    out = np.asarray(layer(x, training=True))
    zero_columns = np.all(out == 0, axis=0)
    assert np.all(np.all(out != 0, axis=0) | zero_columns)
    # 400 Bernoulli(0.5): sd 10; 4 sd.
    assert 160 <= zero_columns.sum() <= 240
    kept = ~zero_columns
    assert_close(out[:, kept], dense.kernel.numpy()[:, kept] * 2, rtol=1e-5)


def test_kernel_dropout_config_and_errors():
    layer = KernelDropout(keras.layers.Dense(3), 0.25, "unit", seed=4)
    clone = KernelDropout.from_config(layer.get_config())
    assert (clone.rate, clone.targeting, clone.seed) == (0.25, "unit", 4)
    with pytest.raises(ValueError, match=r"Received: rate=1.0"):
        KernelDropout(keras.layers.Dense(3), 1.0)
    with pytest.raises(ValueError, match="has none"):
        FixedMask(keras.layers.ReLU(), 0.5)(np.ones((1, 2)))
    with pytest.raises(TypeError, match="Received: layer='dense'"):
        FixedMask("dense", 0.5)
