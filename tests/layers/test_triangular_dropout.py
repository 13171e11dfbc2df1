import math

import keras
import numpy as np
import pytest
import tensorflow as tf
from keras import ops

from keras_tdrop import TriangularDropout
from keras_tdrop import set_width
from keras_tdrop.layers.triangular_dropout import triangular_dropout_layers
from keras_tdrop.layers.triangular_dropout import triangular_widths
from tests import testing
from tests.tolerance import assert_close
from tests.tolerance import close


def paper_mask(batch, units):
    """Numpy transcription of the paper's exact masks (divisible cases)."""
    tri = np.tril(np.ones((min(batch, units),) * 2))
    if batch == units:
        return tri
    if batch > units:
        return np.repeat(tri, batch // units, axis=0)
    return np.repeat(tri, units // batch, axis=1)


def prefix_mask(widths, units):
    return (np.arange(units)[None, :] < np.asarray(widths)[:, None]) * 1.0


def training_mask(layer, batch, units, extra=()):
    x = np.ones((batch,) + tuple(extra) + (units,), "float32")
    return ops.convert_to_numpy(layer(x, training=True))


def row_widths(mask):
    """Widths of a mask that must be a prefix in every row."""
    widths = mask.sum(axis=-1)
    np.testing.assert_array_equal(mask, prefix_mask(widths, mask.shape[-1]))
    return widths.astype(int)


class TriangularDropoutLayerTest(testing.TestCase):
    def test_layer_harness(self):
        self.run_layer_test(
            TriangularDropout,
            init_kwargs={"mode": "random", "unmasked_rate": 0.2, "seed": 3},
            input_shape=(3, 5),
            expected_output_shape=(3, 5),
            expected_num_trainable_weights=0,
            expected_num_non_trainable_weights=1,
            expected_num_seed_generators=1,
            supports_masking=True,
        )

    def test_layer_harness_triangular_rank4(self):
        self.run_layer_test(
            TriangularDropout,
            init_kwargs={"width": 2},
            input_shape=(4, 3, 3, 6),
            expected_output_shape=(4, 3, 3, 6),
            expected_num_non_trainable_weights=1,
            supports_masking=True,
        )


@pytest.mark.parametrize(
    "batch,units",
    [(4, 4), (32, 32), (8, 4), (12, 3), (2, 8), (4, 32), (1, 1), (64, 16)],
)
def test_exact_mask_divisible_equals_paper(batch, units):
    mask = training_mask(TriangularDropout(), batch, units)
    np.testing.assert_array_equal(mask, paper_mask(batch, units))


@pytest.mark.parametrize(
    "batch,units",
    [(5, 3), (3, 5), (7, 32), (33, 32), (100, 32), (31, 32), (10, 4)],
)
def test_exact_mask_non_dividing(batch, units):
    widths = row_widths(training_mask(TriangularDropout(), batch, units))
    expected = [math.ceil((j + 1) * units / batch) for j in range(batch)]
    np.testing.assert_array_equal(widths, expected)
    assert widths[-1] == units and widths[0] >= 1
    assert np.all(np.diff(widths) >= 0)
    # Spread evenly: when B >= n every width occurs floor or ceil(B/n) times.
    if batch >= units:
        counts = np.bincount(widths, minlength=units + 1)[1:]
        assert set(counts) <= {batch // units, -(-batch // units)}


def test_batch_of_one_keeps_everything():
    mask = training_mask(TriangularDropout(), 1, 6)
    np.testing.assert_array_equal(mask, np.ones((1, 6)))


def test_widths_helper_in_numpy():
    got = ops.convert_to_numpy(triangular_widths(6, 4))
    np.testing.assert_array_equal(got, [1, 2, 2, 3, 4, 4])


def test_mask_broadcasts_over_middle_axes():
    mask = training_mask(TriangularDropout(), 4, 4, extra=(3, 2))
    for i in range(3):
        for j in range(2):
            np.testing.assert_array_equal(mask[:, i, j], np.tril(np.ones(4)))


def test_unknown_batch_dimension_in_functional_model():
    inputs = keras.Input((6,))
    outputs = TriangularDropout()(inputs)
    model = keras.Model(inputs, outputs)
    step = tf.function(
        lambda x: model(x, training=True),
        input_signature=[tf.TensorSpec((None, 6), "float32")],
    )
    for batch in (6, 3, 4, 1):  # one trace, several batch sizes
        x = tf.ones((batch, 6))
        got = step(x).numpy()
        expected = [math.ceil((j + 1) * 6 / batch) for j in range(batch)]
        np.testing.assert_array_equal(got, prefix_mask(expected, 6))
    assert step.experimental_get_tracing_count() == 1


def test_last_smaller_batch_in_fit():
    inputs = keras.Input((4,))
    masked = TriangularDropout()(keras.layers.Dense(4, name="d")(inputs))
    model = keras.Model(inputs, keras.layers.Dense(1)(masked))
    model.compile("sgd", "mse")
    x = np.random.default_rng(0).normal(size=(10, 4)).astype("float32")
    history = model.fit(x, x[:, :1], batch_size=4, epochs=2, verbose=0)
    assert np.all(np.isfinite(history.history["loss"]))


@pytest.mark.parametrize("units,batch", [(8, 4000), (32, 4000), (5, 3001)])
def test_random_mode_widths_uniform(units, batch):
    layer = TriangularDropout(mode="random", seed=7)
    widths = row_widths(training_mask(layer, batch, units))
    assert widths.min() >= 1 and widths.max() <= units
    counts = np.bincount(widths, minlength=units + 1)[1:]
    expected = batch / units
    # Chi-square with n-1 dof against the 99.99% quantile (Wilson-Hilferty).
    chi2 = ((counts - expected) ** 2 / expected).sum()
    dof = units - 1
    z = 3.72
    limit = dof * (1 - 2 / (9 * dof) + z * math.sqrt(2 / (9 * dof))) ** 3
    assert chi2 < limit
    assert np.all(counts > 0)


def test_random_mode_fresh_masks_each_call():
    layer = TriangularDropout(mode="random", seed=1)
    a = row_widths(training_mask(layer, 64, 16))
    b = row_widths(training_mask(layer, 64, 16))
    assert not np.array_equal(a, b)


@pytest.mark.parametrize("mode", ["triangular", "random"])
@pytest.mark.parametrize("rate", [0.25, 0.6])
def test_unmasked_rate(mode, rate):
    units, batch, draws = 16, 256, 8
    layer = TriangularDropout(mode=mode, unmasked_rate=rate, seed=2)
    full = 0
    for _ in range(draws):
        widths = row_widths(training_mask(layer, batch, units))
        full += int((widths == units).sum())
    n = batch * draws
    # Rows at full width: unmasked ones plus masked ones that drew n.
    p_full_masked = 1 / units
    p = rate + (1 - rate) * p_full_masked
    sd = math.sqrt(n * p * (1 - p))
    assert abs(full - n * p) < 4 * sd


def test_unmasked_rate_one_is_identity_in_training():
    layer = TriangularDropout(unmasked_rate=1.0)
    np.testing.assert_array_equal(training_mask(layer, 8, 8), np.ones((8, 8)))


def test_inference_identity_by_default():
    x = np.random.default_rng(0).normal(size=(3, 2, 7)).astype("float32")
    layer = TriangularDropout()
    np.testing.assert_array_equal(ops.convert_to_numpy(layer(x)), x)


def test_width_at_inference():
    x = np.random.default_rng(0).normal(size=(3, 7)).astype("float32")
    layer = TriangularDropout(width=3)
    expected = x * prefix_mask([3] * 3, 7)
    np.testing.assert_array_equal(ops.convert_to_numpy(layer(x)), expected)
    layer.width = 5
    assert layer.width == 5
    expected = x * prefix_mask([5] * 3, 7)
    np.testing.assert_array_equal(ops.convert_to_numpy(layer(x)), expected)
    layer.width = None
    assert layer.width is None
    np.testing.assert_array_equal(ops.convert_to_numpy(layer(x)), x)


def test_width_caps_training_masks():
    layer = TriangularDropout(width=4)
    widths = row_widths(training_mask(layer, 8, 10))
    np.testing.assert_array_equal(widths, [1, 1, 2, 2, 3, 3, 4, 4])


def test_set_width_without_retrace():
    inputs = keras.Input((6,))
    x = keras.layers.Dense(6, name="fc1")(inputs)
    x = TriangularDropout(name="tri1")(x)
    x = keras.layers.Dense(5, name="fc2")(x)
    x = TriangularDropout(name="tri2")(x)
    model = keras.Model(inputs, x)
    data = np.random.default_rng(1).normal(size=(4, 6)).astype("float32")
    full = model.predict(data, verbose=0)
    predict_function = model.predict_function
    changed = set_width(model, 2)
    assert [layer.name for layer in changed] == ["tri1", "tri2"]
    narrow = model.predict(data, verbose=0)
    assert model.predict_function is predict_function
    np.testing.assert_array_equal(narrow[:, 2:], 0.0)
    assert not close(narrow[:, :2], full[:, :2], rtol=1e-5)
    set_width(model, {"tri2": 3})
    assert model.get_layer("tri1").width == 2
    assert model.get_layer("tri2").width == 3
    set_width(model, None)
    assert_close(model.predict(data, verbose=0), full)


def test_set_width_nested_model():
    inner_in = keras.Input((4,))
    inner = keras.Model(inner_in, TriangularDropout(name="t")(inner_in))
    outer_in = keras.Input((4,))
    outer = keras.Model(outer_in, inner(outer_in))
    assert triangular_dropout_layers(outer) == [inner.get_layer("t")]
    set_width(outer, 1)
    got = outer.predict(np.ones((2, 4)), verbose=0)
    np.testing.assert_array_equal(got, prefix_mask([1, 1], 4))


def test_set_width_errors():
    inputs = keras.Input((4,))
    model = keras.Model(inputs, TriangularDropout(name="t")(inputs))
    with pytest.raises(ValueError, match="at most the layer's 4 units"):
        set_width(model, 5)
    with pytest.raises(ValueError, match=r"width=0"):
        set_width(model, 0)
    with pytest.raises(ValueError, match=r"\['nope'\]"):
        set_width(model, {"nope": 2})
    assert model.get_layer("t").width is None
    plain = keras.Model(inputs, keras.layers.Dense(2)(inputs))
    with pytest.raises(ValueError, match="no TriangularDropout"):
        set_width(plain, 2)


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"mode": "block"}, "mode='block'"),
        ({"unmasked_rate": 1.5}, "unmasked_rate=1.5"),
        ({"unmasked_rate": True}, "unmasked_rate=True"),
        ({"width": 0}, "width=0"),
        ({"width": 2.0}, "width=2.0"),
    ],
)
def test_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        TriangularDropout(**kwargs)


def test_bad_input_shapes():
    with pytest.raises(ValueError, match="rank >= 2"):
        TriangularDropout()(np.ones((4,), "float32"))
    with pytest.raises(ValueError, match="at most the layer's 3 units"):
        TriangularDropout(width=4)(np.ones((2, 3), "float32"))


def test_config_round_trip_keeps_width():
    layer = TriangularDropout(mode="random", unmasked_rate=0.1, seed=4)
    layer.build((None, 8))
    layer.width = 6
    config = layer.get_config()
    assert config["width"] == 6 and config["mode"] == "random"
    clone = TriangularDropout.from_config(config)
    assert clone.width == 6 and clone.unmasked_rate == 0.1 and clone.seed == 4


def test_keras_round_trip(tmp_path):
    inputs = keras.Input((6,))
    x = keras.layers.Dense(8, name="fc")(inputs)
    x = TriangularDropout(mode="random", seed=1, name="tri")(x)
    model = keras.Model(inputs, keras.layers.Dense(2, name="out")(x))
    set_width(model, 3)
    path = tmp_path / "tri.keras"
    model.save(path)
    loaded = keras.saving.load_model(path)
    assert loaded.get_layer("tri").width == 3
    assert loaded.get_layer("tri").mode == "random"
    data = np.random.default_rng(2).normal(size=(5, 6)).astype("float32")
    assert_close(
        loaded.predict(data, verbose=0), model.predict(data, verbose=0)
    )
    set_width(loaded, None)
    assert loaded.get_layer("tri").width is None


def test_gradients_only_reach_kept_units():
    layer = TriangularDropout()
    x = tf.Variable(np.ones((4, 4), "float32"))
    with tf.GradientTape() as tape:
        y = tf.reduce_sum(layer(x, training=True))
    np.testing.assert_array_equal(tape.gradient(y, x), np.tril(np.ones(4)))
