"""The kernels that pruning acts on.

`prunable_kernels` lists every kernel of every layer not excluded, the
logits layer left out by default; `_check_model` is the check every pruning
entry point makes first.
"""

import keras

from keras_tdrop.kernels import iter_layers
from keras_tdrop.kernels import kernel_variables
from keras_tdrop.kernels import logits_kernels
from keras_tdrop.kernels import resolve_exclude

__all__ = ["prunable_kernels"]


def _check_model(model):
    if not isinstance(model, keras.Model):
        raise TypeError(
            f"`model` must be a keras.Model. Received: model={model!r}"
        )
    if not model.built:
        raise ValueError(
            f"`model` must be built before pruning. Received: unbuilt model "
            f"'{model.name}'"
        )


def prunable_kernels(model, exclude=None, exclude_logits=True):
    """The kernels pruning acts on: every kernel of every layer not excluded.

    The logits layer is excluded by default, as in the references; biases,
    normalization parameters and other non-kernel weights never are pruned.
    """
    _check_model(model)
    excluded = resolve_exclude(model, exclude, exclude_logits)
    kernels = []
    for layer in iter_layers(model):
        if excluded(layer):
            continue
        kernels.extend(kernel_variables(layer))
    if exclude_logits:
        # A subclassed model, or one in a ModelTargetedDropout, has no
        # logits layer in a graph; its logits kernel is found by running it.
        logits = {id(k) for k in logits_kernels(model)}
        kernels = [k for k in kernels if id(k) not in logits]
    return kernels
