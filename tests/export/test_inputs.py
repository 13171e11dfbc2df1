import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_tdrop.export.inputs import InputSpec
from keras_tdrop.export.inputs import as_inputs
from keras_tdrop.export.inputs import calibration_examples
from keras_tdrop.export.inputs import default_sample
from keras_tdrop.export.inputs import input_specs

IMAGE = [InputSpec("image", (None, 3, 2), "float32")]
TWO = [InputSpec("a", (None, 3), "float32"), InputSpec("b", (None,), "int32")]


def test_specs_of_functional_and_subclassed_models():
    a = keras.Input((3,), name="a")
    b = keras.Input((2,), name="b", dtype="int32")
    model = keras.Model([a, b], keras.layers.Concatenate()([a, b]))
    assert input_specs(model) == [
        InputSpec("a", (None, 3), "float32"),
        InputSpec("b", (None, 2), "int32"),
    ]

    class Net(keras.Model):
        def __init__(self):
            super().__init__()
            self.fc = keras.layers.Dense(2)

        def call(self, x):
            return self.fc(x)

    net = Net()
    net(np.zeros((8, 5)))
    assert input_specs(net) == [InputSpec("input", (None, 5), "float32")]
    with pytest.raises(ValueError, match="must have known inputs"):
        input_specs(Net())


def test_as_inputs_adds_a_batch_axis_and_orders_by_name():
    (image,) = as_inputs(np.ones((3, 2)), IMAGE, "sample")
    assert image.shape == (1, 3, 2) and image.dtype == np.float32
    a, b = as_inputs({"b": [1, 2], "a": np.zeros((2, 3))}, TWO, "sample")
    assert a.shape == (2, 3) and b.dtype == np.int32
    np.testing.assert_array_equal(b, [1, 2])


@pytest.mark.parametrize(
    "value, match",
    [
        ({"a": np.zeros((2, 3))}, r"no entry for the inputs \['b'\]"),
        ([np.zeros((2, 3))], "must give 2 input arrays"),
        ([np.zeros((2, 4)), np.zeros(2)], r"input 'a' of shape \(None, 3\)"),
    ],
)
def test_as_inputs_errors_name_the_argument(value, match):
    with pytest.raises(ValueError, match=match):
        as_inputs(value, TWO, "sample")


def test_calibration_examples_yield_single_rows_from_every_source():
    x = np.arange(30, dtype="float32").reshape(5, 3, 2)
    dataset = tf.data.Dataset.from_tensor_slices((x, np.zeros(5))).batch(2)
    for source in (x, dataset, dataset.unbatch(), lambda: [x[:2], x[2:]]):
        rows = list(calibration_examples(source, IMAGE)())
        assert len(rows) == 5
        np.testing.assert_array_equal(np.concatenate([r[0] for r in rows]), x)
    with pytest.raises(TypeError, match="representative_data"):
        calibration_examples("data.npy", IMAGE)


def test_default_sample_seeded_or_from_examples():
    first = default_sample(TWO, None, 4)
    again = default_sample(TWO, None, 4)
    np.testing.assert_array_equal(first[0], again[0])
    assert first[0].shape == (4, 3) and first[0].dtype == np.float32
    assert set(np.unique(first[1])) <= {0, 1} and first[1].dtype == np.int32
    x = np.arange(30, dtype="float32").reshape(5, 3, 2)
    (sample,) = default_sample(IMAGE, calibration_examples(x, IMAGE), 3)
    np.testing.assert_array_equal(sample, x[:3])
    with pytest.raises(ValueError, match="yielded no examples"):
        default_sample(IMAGE, calibration_examples(x[:0], IMAGE), 3)
    unknown = [InputSpec("t", (None, None), "float32")]
    with pytest.raises(ValueError, match="unknown dimension"):
        default_sample(unknown, None, 3)
