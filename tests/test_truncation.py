import keras
import numpy as np
import pytest

from keras_tdrop import TriangularDropout
from keras_tdrop import set_width
from keras_tdrop import truncate
from keras_tdrop.experiments import models
from tests.tolerance import assert_close

RNG = np.random.default_rng(0)


def randomize(model, seed=0):
    """Random weights everywhere, BN statistics included (variance > 0)."""
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        if isinstance(layer, TriangularDropout):
            continue
        weights = [
            rng.normal(size=w.shape).astype(w.dtype)
            for w in layer.get_weights()
        ]
        if isinstance(layer, keras.layers.BatchNormalization):
            weights[-1] = np.abs(weights[-1]) + 0.5
        layer.set_weights(weights)
    return model


def dense_chain():
    inputs = keras.Input((6,), name="x")
    x = keras.layers.Dense(8, activation="relu", name="fc1")(inputs)
    x = TriangularDropout(name="tri1")(x)
    x = keras.layers.Dense(7, name="fc2")(x)
    x = keras.layers.BatchNormalization(name="bn2")(x)
    x = keras.layers.Activation("tanh", name="act2")(x)
    x = TriangularDropout(mode="random", name="tri2")(x)
    outputs = keras.layers.Dense(3, name="logits")(x)
    return randomize(keras.Model(inputs, outputs, name="chain"))


def dense_chain_params(w1, w2):
    return (6 * w1 + w1) + (w1 * w2 + w2) + 4 * w2 + (w2 * 3 + 3)


def conv_net():
    inputs = keras.Input((9, 9, 3))
    x = keras.layers.Conv2D(8, 3, activation="relu", name="conv1")(inputs)
    x = TriangularDropout(name="tri_c")(x)
    x = keras.layers.Conv2D(5, 3, name="conv2")(x)
    x = keras.layers.MaxPooling2D(name="pool")(x)
    x = TriangularDropout(name="tri_p")(x)
    x = keras.layers.Flatten(name="flatten")(x)
    outputs = keras.layers.Dense(4, name="logits")(x)
    return randomize(keras.Model(inputs, outputs))


def outputs_of(model, x):
    return model.predict(x, verbose=0)


def assert_no_triangular(model):
    kinds = [type(layer).__name__ for layer in model.layers]
    assert "TriangularDropout" not in kinds


@pytest.mark.parametrize("w1,w2", [(1, 1), (3, 5), (8, 7), (5, 2)])
def test_dense_chain_equals_masked_model(w1, w2):
    model = dense_chain()
    x = RNG.normal(size=(16, 6)).astype("float32")
    small = truncate(model, {"tri1": w1, "tri2": w2})
    assert_no_triangular(small)
    assert small.count_params() == dense_chain_params(w1, w2)
    assert small.get_layer("fc1").kernel.shape == (6, w1)
    assert small.get_layer("fc2").kernel.shape == (w1, w2)
    assert small.get_layer("logits").kernel.shape == (w2, 3)
    set_width(model, {"tri1": w1, "tri2": w2})
    assert_close(
        outputs_of(small, x), outputs_of(model, x), atol=1e-5, rtol=1e-5
    )


def test_truncated_weights_are_the_leading_slices():
    model = dense_chain()
    small = truncate(model, 3)
    big, narrow = model.get_layer("fc2"), small.get_layer("fc2")
    np.testing.assert_array_equal(narrow.kernel, big.kernel.numpy()[:3, :3])
    np.testing.assert_array_equal(narrow.bias, big.bias.numpy()[:3])
    for name in ("gamma", "beta", "moving_mean", "moving_variance"):
        np.testing.assert_array_equal(
            getattr(small.get_layer("bn2"), name),
            getattr(model.get_layer("bn2"), name).numpy()[:3],
        )
    np.testing.assert_array_equal(
        small.get_layer("logits").kernel,
        model.get_layer("logits").kernel.numpy()[:3],
    )


def test_original_model_untouched():
    model = dense_chain()
    model.get_layer("tri2").width = 6
    before = [w.copy() for w in model.get_weights()]
    truncate(model, {"tri1": 2})
    for a, b in zip(before, model.get_weights()):
        np.testing.assert_array_equal(a, b)
    assert model.get_layer("tri1").width is None
    assert model.get_layer("tri2").width == 6
    assert len(model.layers) == 8


def test_default_width_is_the_width_set_on_each_layer():
    model = dense_chain()
    set_width(model, {"tri1": 4, "tri2": 2})
    small = truncate(model)
    assert small.count_params() == dense_chain_params(4, 2)
    full = truncate(dense_chain())
    assert full.count_params() == dense_chain_params(8, 7)
    x = RNG.normal(size=(4, 6)).astype("float32")
    assert_close(
        outputs_of(small, x), outputs_of(model, x), atol=1e-5, rtol=1e-5
    )


@pytest.mark.parametrize("w_conv,w_pool", [(2, 3), (8, 5), (1, 1)])
def test_conv_channels_through_pooling_and_flatten(w_conv, w_pool):
    model = conv_net()
    x = RNG.normal(size=(3, 9, 9, 3)).astype("float32")
    widths = {"tri_c": w_conv, "tri_p": w_pool}
    small = truncate(model, widths)
    assert_no_triangular(small)
    assert small.get_layer("conv1").kernel.shape == (3, 3, 3, w_conv)
    assert small.get_layer("conv2").kernel.shape == (3, 3, w_conv, w_pool)
    assert small.get_layer("logits").kernel.shape == (2 * 2 * w_pool, 4)
    set_width(model, widths)
    assert_close(
        outputs_of(small, x), outputs_of(model, x), atol=1e-4, rtol=1e-4
    )


@pytest.mark.parametrize("width", [1, 4, 32])
def test_conv_autoencoder(width):
    model = randomize(models.conv_autoencoder(32, filters=4), seed=width)
    small = truncate(model, width)
    reference = models.conv_autoencoder(width, triangular=False, filters=4)
    assert small.count_params() == reference.count_params()
    x = RNG.uniform(size=(2, 28, 28, 1)).astype("float32")
    set_width(model, width)
    # Sums of different lengths round differently: float32 tolerance.
    assert_close(
        outputs_of(small, x), outputs_of(model, x), atol=1e-4, rtol=1e-3
    )


def test_sequential_model():
    model = keras.Sequential(
        [
            keras.Input((5,)),
            keras.layers.Dense(6, activation="relu", name="fc"),
            TriangularDropout(name="tri"),
            keras.layers.Dense(2, name="out"),
        ]
    )
    randomize(model)
    small = truncate(model, 2)
    assert small.count_params() == 5 * 2 + 2 + 2 * 2 + 2
    set_width(model, 2)
    x = RNG.normal(size=(3, 5)).astype("float32")
    assert_close(outputs_of(small, x), outputs_of(model, x), atol=1e-5)


# Paper, Table 1: VGG19's classification head, 25088-4096-4096-1000.
TABLE_1 = {
    4096: 123_642_856,
    2048: 57_627_624,
    1024: 27_765_736,
    512: 13_621_224,
    256: 6_745_576,
    128: 3_356_904,
    64: 1_674_856,
    32: 836_904,
}


def head_params(width, inputs=25088, classes=1000):
    return (inputs + 1) * width + (width + 1) * width + (width + 1) * classes


@pytest.mark.parametrize(
    "width,expected",
    sorted(TABLE_1.items())[:-1],  # 4096: the next test
)
def test_table_1_parameter_counts(width, expected):
    # Built, never run: only the variables are counted.
    narrow = models.mlp_head(units=(width, width), triangular=False)
    assert narrow.count_params() == expected == head_params(width)


def test_table_1_full_head_with_triangular_dropout():
    head = models.mlp_head()
    trainable = sum(int(np.prod(w.shape)) for w in head.trainable_weights)
    assert trainable == TABLE_1[4096] == head_params(4096)
    # One scalar width variable per TriangularDropout layer.
    assert head.count_params() == 123_642_856 + 2


@pytest.mark.parametrize("width", [1, 3, 10])
def test_small_head_truncation_matches_formula(width):
    head = randomize(
        models.mlp_head(input_dim=20, units=(10, 10), num_classes=4)
    )
    small = truncate(head, width)
    assert small.count_params() == head_params(width, 20, 4)
    set_width(head, width)
    x = RNG.normal(size=(5, 20)).astype("float32")
    assert_close(
        outputs_of(small, x), outputs_of(head, x), atol=1e-4, rtol=1e-4
    )


@pytest.mark.slow
def test_table_1_truncating_the_real_head():
    """Truncates the 123.6M-parameter head itself (about 1 GB of memory)."""
    head = models.mlp_head()
    assert truncate(head, 1024).count_params() == 27_765_736


def two_consumers():
    inputs = keras.Input((4,))
    x = keras.layers.Dense(6, name="fc")(inputs)
    t = TriangularDropout(name="tri")(x)
    a = keras.layers.Dense(2, name="a")(t)
    b = keras.layers.Dense(2, name="b")(t)
    return keras.Model(inputs, keras.layers.Add(name="add")([a, b]))


def into_reshape():
    inputs = keras.Input((4,))
    x = keras.layers.Dense(6, name="fc")(inputs)
    x = TriangularDropout(name="tri")(x)
    x = keras.layers.Reshape((3, 2), name="reshape")(x)
    return keras.Model(inputs, keras.layers.Flatten()(x))


def into_concat():
    inputs = keras.Input((4,))
    x = keras.layers.Dense(6, name="fc")(inputs)
    x = TriangularDropout(name="tri")(x)
    x = keras.layers.Concatenate(name="concat")([x, inputs])
    return keras.Model(inputs, keras.layers.Dense(2, name="out")(x))


def as_output():
    inputs = keras.Input((4,))
    x = keras.layers.Dense(6, name="fc")(inputs)
    return keras.Model(inputs, TriangularDropout(name="tri")(x))


def producer_also_elsewhere():
    inputs = keras.Input((4,))
    x = keras.layers.Dense(6, name="fc")(inputs)
    t = TriangularDropout(name="tri")(x)
    skip = keras.layers.Dense(2, name="skip")(x)
    out = keras.layers.Dense(2, name="out")(t)
    return keras.Model(inputs, keras.layers.Add(name="add")([out, skip]))


def producer_is_output():
    inputs = keras.Input((4,))
    x = keras.layers.Dense(6, name="fc")(inputs)
    t = TriangularDropout(name="tri")(x)
    return keras.Model(inputs, [keras.layers.Dense(2, name="out")(t), x])


def after_layer_norm():
    inputs = keras.Input((4,))
    x = keras.layers.Dense(6, name="fc")(inputs)
    x = keras.layers.LayerNormalization(name="ln")(x)
    x = TriangularDropout(name="tri")(x)
    return keras.Model(inputs, keras.layers.Dense(2)(x))


def on_input():
    inputs = keras.Input((4,))
    x = TriangularDropout(name="tri")(inputs)
    return keras.Model(inputs, keras.layers.Dense(2)(x))


@pytest.mark.parametrize(
    "build,match",
    [
        (into_reshape, "reshape"),
        (as_output, "output"),
        (producer_also_elsewhere, r"'fc'.*read by \['skip'\] without"),
        (producer_is_output, "'fc'.*model output"),
        (after_layer_norm, "'ln'"),
        (on_input, "model input"),
    ],
)
def test_untruncatable_structures_raise_naming_the_layer(build, match):
    model = build()
    with pytest.raises(ValueError, match=match):
        truncate(model, 2)


def test_concatenation_is_followed_exactly():
    # The channel graph carries the truncated units through concatenation
    # (their slots in the concatenated axis).
    model = randomize(into_concat())
    small = truncate(model, 2)
    set_width(model, 2)
    x = RNG.normal(size=(4, 4)).astype("float32")
    assert_close(outputs_of(small, x), outputs_of(model, x), atol=1e-5)
    assert small.get_layer("out").kernel.shape == (2 + 4, 2)


def test_two_consumers_truncate_both_consistently():
    # Two Dense consumers each take the first w inputs: still exact.
    model = randomize(two_consumers())
    small = truncate(model, 3)
    set_width(model, 3)
    x = RNG.normal(size=(4, 4)).astype("float32")
    assert_close(outputs_of(small, x), outputs_of(model, x), atol=1e-5)


@pytest.mark.parametrize(
    "width,match",
    [
        (0, "width=0"),
        (9, "width=9"),
        (2.5, "width=2.5"),
        ({"nope": 2}, r"\['nope'\]"),
    ],
)
def test_bad_widths(width, match):
    with pytest.raises(ValueError, match=match):
        truncate(dense_chain(), width)


def test_models_without_triangular_dropout():
    inputs = keras.Input((3,))
    plain = keras.Model(inputs, keras.layers.Dense(2)(inputs), name="plain")
    with pytest.raises(ValueError, match="no TriangularDropout"):
        truncate(plain, 1)
    with pytest.raises(TypeError, match="keras.Model"):
        truncate(TriangularDropout(), 1)
    inner = as_output()
    nested = keras.Model(inner.inputs, inner(inner.inputs))
    with pytest.raises(ValueError, match="nested"):
        truncate(nested, 1)


def bn_inputs_statistics(model, name, x):
    """Mean and biased variance of BatchNorm `name`'s inputs over `x`."""
    probe = keras.Model(model.inputs, model.get_layer(name).input)
    values = np.asarray(probe.predict(x, verbose=0), "float64")
    return values.mean(axis=0), values.var(axis=0)


@pytest.mark.parametrize("form", ["arrays", "pair", "dataset"])
def test_recalibrate_sets_the_truncated_models_own_statistics(form):
    model = dense_chain()
    x = (RNG.normal(size=(40, 6)) * 2 + 1).astype("float32")
    data = {
        "arrays": x,
        "pair": (x, np.zeros(40)),
        "dataset": [x[:16], x[16:32], x[32:]],
    }[form]
    before = [w.copy() for w in model.get_weights()]
    plain = truncate(model, {"tri1": 3, "tri2": 5})
    small = truncate(model, {"tri1": 3, "tri2": 5}, recalibrate=data)
    bn = small.get_layer("bn2")
    mean, variance = bn_inputs_statistics(small, "bn2", x)
    assert_close(bn.moving_mean.numpy(), mean, rtol=1e-5)
    assert_close(bn.moving_variance.numpy(), variance, rtol=1e-5, atol=1e-7)
    # Narrower fc2 inputs: its own statistics differ from the trained ones.
    trained = plain.get_layer("bn2").moving_mean.numpy()
    assert np.abs(trained - mean).max() > 0.1
    for got, want in zip(small.weights, plain.weights):
        if "moving" not in got.path:
            np.testing.assert_array_equal(got.numpy(), want.numpy())
    for got, want in zip(model.get_weights(), before):
        np.testing.assert_array_equal(got, want)


def test_recalibrate_without_batchnorm_warns_and_changes_nothing():
    model = conv_net()
    x = RNG.normal(size=(8, 9, 9, 3)).astype("float32")
    plain = truncate(model, 2)
    with pytest.warns(UserWarning, match="no BatchNormalization"):
        small = truncate(model, 2, recalibrate=x)
    np.testing.assert_array_equal(outputs_of(small, x), outputs_of(plain, x))


@pytest.mark.parametrize(
    "data,match",
    [
        (np.zeros((0, 6), "float32"), "`recalibrate`: `data` is empty"),
        ([], "`recalibrate`: `data` is empty"),
        (np.zeros((4, 5), "float32"), "`recalibrate`: `data` does not fit"),
        (3, "`recalibrate`: `data` must be arrays"),
    ],
)
def test_bad_recalibrate_data(data, match):
    model = dense_chain()
    before = [w.copy() for w in model.get_weights()]
    with pytest.raises(ValueError, match=match):
        truncate(model, 2, recalibrate=data)
    for got, want in zip(model.get_weights(), before):
        np.testing.assert_array_equal(got, want)
