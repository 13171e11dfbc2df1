"""L1 regularisation of the kernels, with Keras' own `regularizers.L1`."""

import keras

from keras_tdrop.baselines._base import check_positive
from keras_tdrop.kernels import kernel_variables
from keras_tdrop.kernels import resolve_exclude
from keras_tdrop.wrapping import check_graph_model
from keras_tdrop.wrapping import clone_with_weights

__all__ = [
    "apply_l1",
    "strip_l1",
]

# The config keys of the regularizers of kernels (Dense, Conv*, EinsumDense,
# MultiHeadAttention; the two kernels of separable convolutions).
_KERNEL_REGULARIZER_KEYS = (
    "kernel_regularizer",
    "depthwise_regularizer",
    "pointwise_regularizer",
)


def _with_regularizers(layer, regularizer):
    config = layer.get_config()
    keys = [k for k in _KERNEL_REGULARIZER_KEYS if k in config]
    if not keys:
        raise ValueError(
            f"Layer '{layer.name}' ({type(layer).__name__}) has a kernel but "
            "no kernel regularizer argument; exclude it."
        )
    for key in keys:
        config[key] = keras.regularizers.serialize(regularizer)
    new = layer.__class__.from_config(config)
    if layer.built:
        new.build_from_config(layer.get_build_config())
    return new


def apply_l1(model, coefficient=0.1, exclude=None, exclude_logits=True):
    """Returns a copy of `model` with `keras.regularizers.L1(coefficient)` on
    every kernel of every eligible layer.

    The penalty is `coefficient * sum |w|` over each kernel, added to the
    loss by Keras. Eligible and excluded as in `apply_targeted_dropout` (the
    logits layer is left alone by default); `model` is not modified. The
    Targeted Dropout paper's L1_beta uses beta = 0.1 (weight pruning) and
    0.01 (unit pruning). `strip_l1` removes the regularizers again.

    Example:
    >>> l1_model = apply_l1(model, coefficient=1e-4)
    """
    check_graph_model(model)
    coefficient = check_positive("coefficient", coefficient)
    excluded = resolve_exclude(model, exclude, exclude_logits)
    regularizer = keras.regularizers.L1(coefficient)

    def regularize(layer):
        if isinstance(layer, (keras.layers.Wrapper, keras.Model)):
            return None
        if excluded(layer) or not kernel_variables(layer):
            return None
        return _with_regularizers(layer, regularizer)

    return clone_with_weights(model, regularize)


def strip_l1(model):
    """Returns a copy of `model` without kernel regularizers (same weights)."""
    check_graph_model(model)

    def unregularize(layer):
        config = layer.get_config()
        if not any(config.get(k) for k in _KERNEL_REGULARIZER_KEYS):
            return None
        return _with_regularizers(layer, None)

    return clone_with_weights(model, unregularize)
