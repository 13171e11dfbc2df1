"""The small MNIST networks of the baselines and examples: a CNN and
LeNet-300-100."""

import keras

__all__ = ["mnist_cnn", "mnist_mlp"]


def mnist_cnn(
    input_shape=(28, 28, 1),
    num_classes=10,
    filters=(32, 64),
    units=128,
    name="mnist_cnn",
):
    """A small convolutional network for MNIST, returning logits.

    `stem` (conv 3x3, relu) -> max pool -> `conv2` (conv 3x3, relu) -> max
    pool -> flatten -> `fc1` (dense, relu) -> `logits` (dense, linear). As in
    the references, targeted dropout and pruning leave the stem and the
    logits alone: pass `exclude=["stem"]` (the logits are excluded by
    default). With the defaults it has 225,034 parameters.

    Args:
        input_shape: tuple, the shape of one image.
        num_classes: int, units of the `logits` layer.
        filters: pair of ints, the filters of `stem` and `conv2`.
        units: int, units of `fc1`.
        name: the model's name.

    Example:
    >>> model = mnist_cnn()
    >>> model.compile("adam", keras.losses.SparseCategoricalCrossentropy(
    ...     from_logits=True), metrics=["accuracy"])
    """
    stem_filters, conv_filters = filters
    inputs = keras.Input(shape=input_shape, name="image")
    x = keras.layers.Conv2D(stem_filters, 3, activation="relu", name="stem")(
        inputs
    )
    x = keras.layers.MaxPooling2D(name="pool1")(x)
    x = keras.layers.Conv2D(conv_filters, 3, activation="relu", name="conv2")(x)
    x = keras.layers.MaxPooling2D(name="pool2")(x)
    x = keras.layers.Flatten(name="flatten")(x)
    x = keras.layers.Dense(units, activation="relu", name="fc1")(x)
    outputs = keras.layers.Dense(num_classes, name="logits")(x)
    return keras.Model(inputs, outputs, name=name)


def mnist_mlp(
    input_shape=(28, 28, 1),
    num_classes=10,
    units=(300, 100),
    name="mnist_mlp",
):
    """The LeNet-300-100 multilayer perceptron, returning logits.

    flatten -> `fc1` (dense, relu) -> `fc2` (dense, relu) -> `logits`
    (dense, linear); 784-300-100-10 with 266,610 parameters by default.

    Args:
        input_shape: tuple, the shape of one image (flattened first).
        num_classes: int, units of the `logits` layer.
        units: pair of ints, the units of `fc1` and `fc2`.
        name: the model's name.

    Example:
    >>> model = mnist_mlp()
    >>> model.count_params()  # 266610
    """
    inputs = keras.Input(shape=input_shape, name="image")
    x = keras.layers.Flatten(name="flatten")(inputs)
    for i, width in enumerate(units, start=1):
        x = keras.layers.Dense(width, activation="relu", name=f"fc{i}")(x)
    outputs = keras.layers.Dense(num_classes, name="logits")(x)
    return keras.Model(inputs, outputs, name=name)
