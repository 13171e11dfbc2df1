import keras
import numpy as np
import pytest

from keras_tdrop.experiments import models
from keras_tdrop.pruning import prunable_kernels
from tests.tolerance import assert_close


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


def resnet_params(depth, width, num_classes=10, channels_in=3):
    """Parameter count of `models.resnet`, from REFERENCE.md's description."""

    def f(base):
        return max(1, int(round(base * width)))

    blocks = (depth - 2) // 6
    stem = f(16)
    total = 7 * 7 * channels_in * stem  # no bias: BN follows
    previous = stem
    for base in (32, 64, 128):
        c = f(base)
        for block in range(blocks):
            total += 4 * previous  # bn1: gamma, beta, moving mean, variance
            if block == 0:
                total += previous * c  # 1x1 projection
            total += 9 * previous * c + 4 * c + 9 * c * c
            previous = c
    return total + 4 * previous + dense_params(previous, num_classes)


@pytest.mark.parametrize(
    "depth, width, num_classes",
    [(32, 1.0, 10), (20, 1.0, 10), (8, 0.5, 10), (14, 0.25, 7)],
)
def test_resnet_parameter_count(depth, width, num_classes):
    model = models.resnet(depth, width, num_classes=num_classes)
    assert model.count_params() == resnet_params(depth, width, num_classes)
    convs = [
        layer.name
        for layer in model.layers
        if isinstance(layer, keras.layers.Conv2D)
    ]
    blocks = (depth - 2) // 6
    # stem + 2 per block + one projection per stage
    assert len(convs) == 1 + 2 * 3 * blocks + 3


def test_resnet32_reference_shapes():
    model = models.resnet(32)
    assert model.name == "resnet32"
    assert model.count_params() == 1_862_010
    assert model.get_layer("stem").kernel.shape == (7, 7, 3, 16)
    assert model.get_layer("stem").strides == (1, 1)
    assert model.get_layer("s1b1_conv1").kernel.shape == (3, 3, 16, 32)
    assert model.get_layer("s1b1_shortcut").kernel.shape == (1, 1, 16, 32)
    assert model.get_layer("s1b5_conv2").kernel.shape == (3, 3, 32, 32)
    assert model.get_layer("s2b1_conv1").strides == (2, 2)
    assert model.get_layer("s3b5_conv2").kernel.shape == (3, 3, 128, 128)
    assert model.get_layer("logits").kernel.shape == (128, 10)
    names = {layer.name for layer in model.layers}
    assert "s1b2_shortcut" not in names  # identity where shapes agree
    out = model(np.zeros((2, 32, 32, 3), "float32"))
    assert out.shape == (2, 10)
    prunable = [k.path for k in prunable_kernels(model, exclude=["stem"])]
    assert "stem/kernel" not in prunable and "logits/kernel" not in prunable
    assert len(prunable) == 2 * 15 + 3


def test_resnet_feature_map_sizes():
    model = models.resnet(8, 0.5)
    sizes = {
        name: model.get_layer(name).output.shape[1:]
        for name in ("stem", "s1b1_add", "s2b1_add", "s3b1_add")
    }
    assert sizes == {
        "stem": (32, 32, 8),
        "s1b1_add": (32, 32, 16),
        "s2b1_add": (16, 16, 32),
        "s3b1_add": (8, 8, 64),
    }


def test_resnet_weight_decay_is_half_sum_of_squares():
    decay = 2e-4
    model = models.resnet(8, 0.25, weight_decay=decay)
    model(np.zeros((1, 32, 32, 3), "float32"))
    kernels = [
        layer.kernel.numpy()
        for layer in model.layers
        if isinstance(layer, (keras.layers.Conv2D, keras.layers.Dense))
    ]
    expected = (
        decay
        * sum(float((k.astype("float64") ** 2).sum()) for k in kernels)
        / 2
    )
    got = float(sum(np.asarray(loss) for loss in model.losses))
    assert_close(got, expected, rtol=1e-5)
    assert not models.resnet(8, 0.25).losses


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"depth": 10}, "Received: depth=10"),
        ({"depth": 0}, "Received: depth=0"),
        ({"width": 0}, "Received: width=0"),
        ({"num_classes": 0}, "Received: num_classes=0"),
    ],
)
def test_resnet_invalid_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        models.resnet(**kwargs)


def test_toy_mlp():
    model = models.toy_mlp()
    assert model.count_params() == dense_params(3072, 10) + dense_params(10, 10)
    assert model.count_params() == 30_840
    assert [layer.name for layer in model.layers] == [
        "image",
        "flatten",
        "hidden",
        "logits",
    ]
    assert model.get_layer("hidden").activation is keras.activations.relu
    assert model(np.zeros((2, 32, 32, 3), "float32")).shape == (2, 10)
    with pytest.raises(ValueError, match="Received: units=0"):
        models.toy_mlp(units=0)


def test_resnet_trains_one_step_with_targeted_dropout():
    from keras_tdrop import apply_targeted_dropout

    model = apply_targeted_dropout(
        models.resnet(8, 0.25), 0.5, 0.75, exclude=["stem"], seed=0
    )
    wrapped = [
        layer.name
        for layer in model.layers
        if type(layer).__name__ == "TargetedDropout"
    ]
    assert len(wrapped) == 6 + 3
    x = np.random.default_rng(0).random((8, 32, 32, 3)).astype("float32")
    model.compile(
        "sgd", keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    )
    history = model.fit(x, np.arange(8) % 10, epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"][0])
