"""Layers translated between Keras 3 and tf_keras, for the TF-MOT bridge.

The layers the bridge supports, their translation (class, configuration,
initializers, regularizers, constraints) in either direction, the copy of
their weights, and the lazy import of TF-MOT and tf_keras.
"""

import inspect

import numpy as np

from keras_tdrop.optional_imports import require

__all__ = [
    "SUPPORTED_LAYERS",
    "copy_layer_weights",
    "import_tfmot",
    "translate_layer",
]

SUPPORTED_LAYERS = (
    "Activation",
    "Add",
    "Average",
    "AveragePooling1D",
    "AveragePooling2D",
    "BatchNormalization",
    "Concatenate",
    "Conv1D",
    "Conv2D",
    "Dense",
    "DepthwiseConv2D",
    "Dropout",
    "Flatten",
    "GlobalAveragePooling1D",
    "GlobalAveragePooling2D",
    "GlobalMaxPooling1D",
    "GlobalMaxPooling2D",
    "LayerNormalization",
    "MaxPooling1D",
    "MaxPooling2D",
    "Multiply",
    "ReLU",
    "Reshape",
    "SeparableConv2D",
    "Softmax",
    "SpatialDropout2D",
    "ZeroPadding2D",
)
_BASE_ARGUMENTS = ("name", "trainable", "dtype")


def import_tfmot():
    """`(tf_keras, tensorflow_model_optimization)`, or an ImportError
    naming the `tfmot` extra."""
    what = "The TF-MOT bridge"
    tfmot = require("tensorflow_model_optimization", "tfmot", what)
    return require("tf_keras", "tfmot", what), tfmot


def translate_layer(layer, lib):
    """The layer of the same class, configuration and name in `lib`.

    `lib` is tf_keras or keras: both name their layers, initializers,
    regularizers and constraints alike; settings the target does not take
    are left out (the weights are copied afterwards).
    """
    target_class = getattr(lib.layers, type(layer).__name__)
    parameters = inspect.signature(target_class.__init__).parameters
    accepted = set(parameters)
    if any(p.kind is p.VAR_KEYWORD for p in parameters.values()):
        accepted.update(_BASE_ARGUMENTS)
    config = {}
    for key, value in layer.get_config().items():
        if key not in accepted:
            continue
        if key == "dtype":
            config[key] = _dtype_name(layer)
        elif isinstance(value, dict) and "class_name" in value:
            config[key] = _translate_object(key, value, lib)
        elif type(value).__name__ == "ListWrapper":  # tf_keras' tracked list
            config[key] = list(value)
        else:
            config[key] = value
    # tf_keras' BatchNormalization keeps `axis` as a list; Keras 3 an int.
    axis = config.get("axis")
    if target_class.__name__ == "BatchNormalization" and isinstance(
        axis, (list, tuple)
    ):
        config["axis"] = axis[0] if len(axis) == 1 else axis
    return target_class(**config)


def _dtype_name(layer):
    policy = getattr(layer, "dtype_policy", None)
    return getattr(policy, "name", None) or layer.dtype


def _translate_object(key, value, lib):
    plain = {"class_name": value["class_name"], "config": value["config"]}
    for suffix, module in (
        ("initializer", lib.initializers),
        ("regularizer", lib.regularizers),
        ("constraint", lib.constraints),
    ):
        if key.endswith(suffix):
            target_class = getattr(module, value["class_name"], None)
            if target_class is None:
                return module.get(plain)
            accepted = inspect.signature(target_class.__init__).parameters
            config = value.get("config") or {}
            return target_class(
                **{k: v for k, v in config.items() if k in accepted}
            )
    raise ValueError(
        f"Cannot translate the setting {key}={value!r} of a layer."
    )


def copy_layer_weights(target, source):
    """Sets `target`'s weights to `source`'s (a layer of the other Keras),
    or raises a ValueError if their shapes differ."""
    values = [np.asarray(w) for w in source.get_weights()]
    shapes = [tuple(w.shape) for w in target.weights]
    if [v.shape for v in values] != shapes:
        raise ValueError(
            f"Layer '{source.name}' has weights of shapes "
            f"{[v.shape for v in values]}, its counterpart {shapes}."
        )
    target.set_weights(values)
