import keras
import numpy as np
import pytest

from keras_tdrop.export.conversion import convert
from keras_tdrop.export.inputs import as_inputs
from keras_tdrop.export.inputs import input_specs
from keras_tdrop.export.verification import TOLERANCES
from keras_tdrop.export.verification import verify
from tests.export.helpers import small_mlp
from tests.tolerance import approx


def two_in_two_out():
    a = keras.Input((3,), name="a")
    b = keras.Input((4,), name="b")
    x = keras.layers.Concatenate()([keras.layers.Dense(2)(b), a])
    wide = keras.layers.Dense(7, name="wide")(x)
    narrow = keras.layers.Dense(1, name="narrow")(x)
    return keras.Model([a, b], [wide, narrow])


def test_inputs_by_name_and_outputs_in_keras_order(counting):
    keras.utils.set_random_seed(0)
    model = two_in_two_out()
    specs = input_specs(model)
    rng = np.random.default_rng(0)
    sample = as_inputs(
        {"b": rng.normal(size=(5, 4)), "a": rng.normal(size=(5, 3))},
        specs,
        "sample",
    )
    check = verify(model, convert(model), sample, specs, 1e-4)
    assert check.passed and check.max_abs_diff < 1e-5
    assert check.op_resolver == "AUTO"
    # The Keras outputs, in order, are what LiteRT's are compared with.
    wide, narrow = model(sample)
    values = np.concatenate([np.ravel(wide), np.ravel(narrow)])
    assert check.output_range == approx(values.max() - values.min())
    assert check.tolerance == approx(1e-4 * check.output_range)
    assert counting.invocations == 1


def test_a_different_model_fails_by_its_difference():
    model, other = small_mlp(0), small_mlp(1)
    specs = input_specs(model)
    x = np.random.default_rng(2).normal(size=(8, 6)).astype("float32")
    check = verify(model, convert(other), [x], specs, TOLERANCES[None])
    expected = np.abs(model.predict(x, verbose=0) - other.predict(x, verbose=0))
    assert not check.passed
    assert check.max_abs_diff == approx(expected.max(), rel=1e-5)


def test_constant_outputs_use_a_range_of_one():
    inputs = keras.Input((2,))
    zeros = keras.layers.Dense(3, kernel_initializer="zeros")(inputs)
    model = keras.Model(inputs, zeros)
    specs = input_specs(model)
    check = verify(model, convert(model), [np.ones((2, 2))], specs, 0.5)
    assert check.output_range == 1.0 and check.tolerance == 0.5
    assert check.max_abs_diff == 0.0 and check.passed


def test_input_and_output_counts_must_match_the_file():
    content = convert(small_mlp())
    two = two_in_two_out()
    specs = input_specs(two)
    sample = [np.ones((2, 3), "float32"), np.ones((2, 4), "float32")]
    with pytest.raises(RuntimeError, match="has 1 inputs, the Keras model 2"):
        verify(two, content, sample, specs, 1e-4)
    inputs = keras.Input((6,), name="x")
    forked = keras.Model(
        inputs, [keras.layers.Dense(3)(inputs), keras.layers.Dense(1)(inputs)]
    )
    specs = input_specs(forked)
    with pytest.raises(RuntimeError, match="has 1 outputs, the Keras model 2"):
        verify(forked, content, [np.ones((2, 6), "float32")], specs, 1e-4)
