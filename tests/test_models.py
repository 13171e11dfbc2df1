import keras
import numpy as np
import pytest

from keras_tdrop import models
from keras_tdrop.pruning import prunable_kernels


def conv_params(kernel, channels_in, filters):
    return kernel * kernel * channels_in * filters + filters


def dense_params(units_in, units):
    return units_in * units + units


@pytest.mark.parametrize(
    "filters, units, num_classes",
    [((32, 64), 128, 10), ((8, 16), 32, 10), ((4, 6), 5, 3)],
)
def test_mnist_cnn_parameter_count(filters, units, num_classes):
    model = models.mnist_cnn(
        filters=filters, units=units, num_classes=num_classes
    )
    # 28 -conv3-> 26 -pool-> 13 -conv3-> 11 -pool-> 5
    expected = (
        conv_params(3, 1, filters[0])
        + conv_params(3, filters[0], filters[1])
        + dense_params(5 * 5 * filters[1], units)
        + dense_params(units, num_classes)
    )
    assert model.count_params() == expected


def test_mnist_cnn_default_count_and_layers():
    model = models.mnist_cnn()
    assert model.count_params() == 225_034
    assert [layer.name for layer in model.layers] == [
        "image",
        "stem",
        "pool1",
        "conv2",
        "pool2",
        "flatten",
        "fc1",
        "logits",
    ]
    assert model.get_layer("stem").kernel.shape == (3, 3, 1, 32)
    assert model.get_layer("conv2").kernel.shape == (3, 3, 32, 64)
    assert model.get_layer("fc1").kernel.shape == (1600, 128)
    assert model.get_layer("logits").activation is keras.activations.linear
    out = model(np.zeros((2, 28, 28, 1), "float32"))
    assert out.shape == (2, 10)


def test_mnist_cnn_prunable_kernels_skip_stem_and_logits():
    model = models.mnist_cnn()
    paths = [k.path for k in prunable_kernels(model, exclude=["stem"])]
    assert paths == ["conv2/kernel", "fc1/kernel"]


@pytest.mark.parametrize(
    "units, expected", [((300, 100), 266_610), ((20, 10), 16_020)]
)
def test_mnist_mlp_parameter_count(units, expected):
    model = models.mnist_mlp(units=units)
    formula = (
        dense_params(784, units[0])
        + dense_params(units[0], units[1])
        + dense_params(units[1], 10)
    )
    assert formula == expected
    assert model.count_params() == expected
    assert [layer.name for layer in model.layers] == [
        "image",
        "flatten",
        "fc1",
        "fc2",
        "logits",
    ]
    assert model(np.zeros((3, 28, 28, 1), "float32")).shape == (3, 10)


def test_models_train_one_step():
    x = np.random.default_rng(0).random((16, 28, 28, 1)).astype("float32")
    y = np.arange(16) % 10
    for model in (models.mnist_cnn(), models.mnist_mlp()):
        model.compile(
            "adam",
            keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        )
        history = model.fit(x, y, epochs=1, batch_size=16, verbose=0)
        assert np.isfinite(history.history["loss"][0])
