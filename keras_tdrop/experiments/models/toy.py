"""The one-hidden-layer network of the Targeted Dropout paper's toy
analysis."""

import keras

from keras_tdrop.experiments.models._checks import check_positive

__all__ = ["toy_mlp"]


def toy_mlp(
    input_shape=(32, 32, 3),
    units=10,
    num_classes=10,
    name="toy_mlp",
):
    """The one-hidden-layer network of the paper's toy analysis (Table 1).

    flatten -> `hidden` (dense, `units` relu units; 10 in the paper) ->
    `logits` (dense, linear). On CIFAR-10 with the defaults: 30,840
    parameters. The paper targets the `hidden` kernel.

    Args:
        input_shape: tuple, the shape of one image (flattened first).
        units: int, hidden ReLU units.
        num_classes: int, units of `logits`.
        name: the model's name.

    Example:
    >>> model = toy_mlp()
    >>> model.count_params()  # 30840
    """
    check_positive("units", units)
    check_positive("num_classes", num_classes)
    inputs = keras.Input(shape=input_shape, name="image")
    x = keras.layers.Flatten(name="flatten")(inputs)
    x = keras.layers.Dense(units, activation="relu", name="hidden")(x)
    outputs = keras.layers.Dense(num_classes, name="logits")(x)
    return keras.Model(inputs, outputs, name=name)
