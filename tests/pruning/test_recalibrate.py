import keras
import numpy as np
import pytest
from keras import ops

from keras_tdrop.pruning import prune
from keras_tdrop.pruning import prune_sweep
from keras_tdrop.pruning import recalibrate_batchnorm
from keras_tdrop.pruning.recalibrate import batchnorm_layers
from tests.tolerance import approx
from tests.tolerance import assert_close

L = keras.layers


def scramble(model, seed=0, affine=True):
    """Gives every BatchNormalization statistics far from the data's (and
    a scale and offset that are not 1 and 0)."""
    rng = np.random.default_rng(seed)
    for layer in batchnorm_layers(model):
        shape = tuple(layer.moving_mean.shape)
        layer.moving_mean.assign(rng.normal(0, 3, shape))
        layer.moving_variance.assign(rng.uniform(0.1, 5, shape))
        if affine:
            layer.gamma.assign(rng.uniform(0.5, 2, shape))
            layer.beta.assign(rng.normal(0, 1, shape))
    return model


def value(variable):
    return ops.convert_to_numpy(variable)


def branchy_model():
    """Convolutions with BatchNorm on two branches (one on axis 1), joined
    and normalized again: later statistics depend on earlier ones."""
    inputs = keras.Input((6, 6, 3))
    x = L.Conv2D(4, 3, name="conv")(inputs)
    a = L.BatchNormalization(name="bn_a")(x)
    b = L.BatchNormalization(axis=1, name="bn_b")(L.ReLU()(a))
    c = L.BatchNormalization(name="bn_c")(L.Conv2D(4, 1, name="c1")(a))
    x = L.BatchNormalization(name="bn_d")(L.Add()([b, c]))
    outputs = L.Dense(3, name="logits")(L.Flatten()(x))
    return scramble(keras.Model(inputs, outputs))


def images(n=70, seed=1):
    rng = np.random.default_rng(seed)
    return (rng.normal(size=(n, 6, 6, 3)) * 2 + 1).astype("float32")


def numpy_moments(values, axis):
    """Mean and biased variance per channel, in float64, with numpy."""
    values = np.asarray(values, "float64")
    axes = tuple(a for a in range(values.ndim) if a != axis % values.ndim)
    return values.mean(axis=axes), values.var(axis=axes)


def assert_statistics_of_inputs(model, x):
    """Each BatchNorm's statistics equal those of its inputs over `x`,
    read by a second model whose outputs are the BatchNorms' inputs."""
    layers = batchnorm_layers(model)
    probe = keras.Model(model.inputs, [layer.input for layer in layers])
    seen = probe.predict(x, batch_size=len(x), verbose=0)
    for layer, values in zip(layers, seen):
        mean, variance = numpy_moments(values, layer.axis)
        assert_close(
            ops.convert_to_numpy(layer.moving_mean), mean, rtol=1e-5, atol=1e-6
        )
        assert_close(
            ops.convert_to_numpy(layer.moving_variance),
            variance,
            rtol=1e-5,
            atol=1e-6,
        )


def weights_of(model):
    return [ops.convert_to_numpy(v).copy() for v in model.weights]


def test_statistics_equal_those_of_the_inputs_and_nothing_else_changes():
    model = branchy_model()
    before = weights_of(model)
    x = images()
    new = recalibrate_batchnorm(model, x, batch_size=16)
    assert new is not model
    assert_statistics_of_inputs(new, x)
    # The caller's model is untouched; only statistics changed in the copy.
    for value, variable in zip(before, model.weights):
        np.testing.assert_array_equal(ops.convert_to_numpy(variable), value)
    statistics = {
        id(v)
        for layer in batchnorm_layers(new)
        for v in (layer.moving_mean, layer.moving_variance)
    }
    for value, variable in zip(before, new.weights):
        if id(variable) not in statistics:
            np.testing.assert_array_equal(ops.convert_to_numpy(variable), value)


def test_statistics_do_not_depend_on_the_batching_or_old_values():
    # 300 examples: one pass of 300, or batches of 7 joined into two
    # (252 and 48 examples), one pass over both per layer.
    x = images(300)
    model = branchy_model()
    one = recalibrate_batchnorm(model, x, batch_size=len(x))
    scramble(model, seed=5, affine=False)
    many = recalibrate_batchnorm(model, x, batch_size=7)
    assert_statistics_of_inputs(many, x)
    for a, b in zip(batchnorm_layers(one), batchnorm_layers(many)):
        for x1, x2 in (
            (a.moving_mean, b.moving_mean),
            (a.moving_variance, b.moving_variance),
        ):
            assert_close(value(x1), value(x2), rtol=1e-5, atol=1e-6)


def test_pruned_model_inplace():
    model = branchy_model()
    pruned = prune(model, 0.5, targeting="unit")
    x = images()
    result = recalibrate_batchnorm(pruned, x, inplace=True)
    assert result is pruned
    assert_statistics_of_inputs(pruned, x)


@pytest.mark.parametrize(
    "form", ["tuple", "list_of_batches", "generator", "tf_data"]
)
def test_data_forms_and_steps(form):
    x = images(64)
    y = np.zeros(64, "int32")
    batches = [x[i : i + 16] for i in range(0, 64, 16)]
    if form == "tuple":
        data = (x[:32], y[:32])
    elif form == "list_of_batches":
        data = [(b, y[:16]) for b in batches]
    elif form == "generator":
        data = (b for b in batches)
    else:
        tf = pytest.importorskip("tensorflow")
        data = tf.data.Dataset.from_tensor_slices((x, y)).batch(16)
    # Two batches of 16 (the tuple: 32 examples in batches of 32).
    new = recalibrate_batchnorm(branchy_model(), data, steps=2)
    assert_statistics_of_inputs(new, x[:32])


def test_sequential_and_nested_models():
    inner = keras.Sequential(
        [keras.Input((5,)), L.Dense(4), L.BatchNormalization(name="bn_in")],
        name="inner",
    )
    inputs = keras.Input((3,))
    x = L.BatchNormalization(name="bn_out")(L.Dense(5)(inputs))
    model = scramble(keras.Model(inputs, L.Dense(2)(inner(L.ReLU()(x)))))
    x = np.random.default_rng(2).normal(size=(40, 3)).astype("float32") + 2
    new = recalibrate_batchnorm(model, x)
    outer = new.get_layer("bn_out")
    nested = new.get_layer("inner").get_layer("bn_in")
    first = keras.Model(new.inputs, outer.input).predict(x, verbose=0)
    mean, variance = numpy_moments(first, -1)
    assert_close(value(outer.moving_mean), mean, rtol=1e-5, atol=1e-6)
    assert_close(value(outer.moving_variance), variance, rtol=1e-5)
    to_inner = keras.Model(new.inputs, new.get_layer("inner").input)
    dense = new.get_layer("inner").layers[0]
    values = dense(to_inner.predict(x, verbose=0))
    mean, variance = numpy_moments(ops.convert_to_numpy(values), -1)
    assert_close(value(nested.moving_mean), mean, rtol=1e-5, atol=1e-6)
    assert_close(value(nested.moving_variance), variance, rtol=1e-5)


@keras.saving.register_keras_serializable(package="test_recalibrate")
class TwoNorms(keras.Model):
    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.fc = L.Dense(4)
        self.bn1 = L.BatchNormalization()
        self.bn2 = L.BatchNormalization()

    def call(self, inputs, training=False):
        x = self.bn1(self.fc(inputs), training=training)
        return self.bn2(ops.square(x), training=training)


def test_subclassed_model_in_order():
    model = TwoNorms()
    x = np.random.default_rng(3).normal(size=(30, 3)).astype("float32")
    model(x)
    scramble(model)
    recalibrate_batchnorm(model, x, batch_size=8, inplace=True)
    hidden = ops.convert_to_numpy(model.fc(x))
    mean, variance = numpy_moments(hidden, -1)
    assert_close(value(model.bn1.moving_mean), mean, rtol=1e-5)
    assert_close(value(model.bn1.moving_variance), variance, rtol=1e-5)
    second = ops.square(model.bn1(hidden, training=False))
    mean, variance = numpy_moments(ops.convert_to_numpy(second), -1)
    assert_close(value(model.bn2.moving_mean), mean, rtol=1e-5)
    assert_close(value(model.bn2.moving_variance), variance, rtol=1e-5)


def test_model_without_batchnorm_is_returned_unchanged():
    model = keras.Sequential([keras.Input((3,)), L.Dense(2)])
    before = weights_of(model)
    with pytest.warns(UserWarning, match="no BatchNormalization"):
        result = recalibrate_batchnorm(model, np.ones((4, 3), "float32"))
    assert result is model
    for value, variable in zip(before, model.weights):
        np.testing.assert_array_equal(ops.convert_to_numpy(variable), value)


def empty_dataset():
    tf = pytest.importorskip("tensorflow")
    return tf.data.Dataset.from_tensor_slices(images(4)).take(0).batch(2)


@pytest.mark.parametrize(
    "data, steps, match",
    [
        (None, None, "`data` is required"),
        (np.zeros((0, 6, 6, 3), "float32"), None, "`data` is empty"),
        ([], None, "`data` is empty"),
        ("dataset", None, "`data` is empty"),
        (np.zeros((8, 6, 6, 2), "float32"), None, "does not fit model"),
        (np.zeros((8, 36, 3), "float32"), None, "does not fit model"),
        (42, None, "`data` must be arrays"),
        (np.zeros((8, 6, 6, 3), "float32"), 0, "`steps` must be"),
    ],
)
def test_bad_input_changes_nothing(data, steps, match):
    model = branchy_model()
    before = weights_of(model)
    if isinstance(data, str):
        data = empty_dataset()
    with pytest.raises(ValueError, match=match):
        recalibrate_batchnorm(model, data, steps=steps, inplace=True)
    for value, variable in zip(before, model.weights):
        np.testing.assert_array_equal(ops.convert_to_numpy(variable), value)


class Flaky(TwoNorms):
    """Fails once armed, after its first layer has been set."""

    def call(self, inputs, training=False):
        x = self.bn1(self.fc(inputs), training=training)
        if getattr(self, "armed", False):
            raise RuntimeError("flaky")
        return self.bn2(x, training=training)


def test_failure_midway_restores_every_statistic():
    model = Flaky()
    x = np.random.default_rng(4).normal(size=(4, 3)).astype("float32")
    model(x)
    model.armed = True
    scramble(model)
    before = weights_of(model)
    with pytest.raises(RuntimeError, match="flaky"):
        recalibrate_batchnorm(model, x, inplace=True)
    for value, variable in zip(before, model.weights):
        np.testing.assert_array_equal(ops.convert_to_numpy(variable), value)


def compiled_branchy_model():
    model = branchy_model()
    model.compile(
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    return model


def test_sweep_recalibrates_at_every_fraction_and_restores():
    model = compiled_branchy_model()
    before = weights_of(model)
    x = images(48)
    y = np.arange(48) % 3
    fractions = (0.0, 0.5)
    rows = prune_sweep(
        model, (x, y), fractions, targeting="unit", recalibrate=x
    )
    for row in rows:
        assert row["recalibrated"] is True
        pruned = prune(model, row["fraction"], targeting="unit")
        pruned = recalibrate_batchnorm(pruned, x, inplace=True)
        pruned.compile(loss=model.loss, metrics=["accuracy"])
        expected = pruned.evaluate(x, y, verbose=0, return_dict=True)
        assert row["loss"] == approx(expected["loss"], rel=1e-5)
    plain = prune_sweep(model, (x, y), (0.5,), targeting="unit")
    assert plain[0]["recalibrated"] is False
    assert plain[0]["loss"] != approx(rows[1]["loss"], rel=1e-3)
    inplace = prune_sweep(
        model, (x, y), (0.5,), "unit", recalibrate=x, inplace=True
    )
    assert inplace[0]["loss"] == approx(rows[1]["loss"], rel=1e-5)
    for value, variable in zip(before, model.weights):
        np.testing.assert_array_equal(ops.convert_to_numpy(variable), value)


def test_sweep_without_batchnorm_says_so():
    model = keras.Sequential([keras.Input((3,)), L.Dense(2)])
    model.compile(loss="mse")
    x = np.ones((8, 3), "float32")
    with pytest.warns(UserWarning, match="no BatchNormalization"):
        rows = prune_sweep(model, (x, np.ones((8, 2))), (0.5,), recalibrate=x)
    assert rows[0]["recalibrated"] is False
    with pytest.raises(ValueError, match="does not fit model"):
        prune_sweep(model, (x, x), (0.5,), recalibrate=x[:, :2])
