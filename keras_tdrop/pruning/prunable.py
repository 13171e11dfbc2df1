"""The kernels that pruning acts on.

`prunable_kernels` lists every kernel of every layer not excluded, the
logits layer left out by default. Every pruning entry point first makes
`check_model(model, built_for="pruning")`.
"""

from keras_tdrop.kernels import check_model
from keras_tdrop.kernels import iter_layers
from keras_tdrop.kernels import kernel_variables
from keras_tdrop.kernels import logits_kernels
from keras_tdrop.kernels import resolve_exclude

__all__ = ["prunable_kernels"]


def prunable_kernels(model, exclude=None, exclude_logits=True):
    """The kernels pruning acts on: every kernel of every layer not excluded.

    The logits layer is excluded by default, as in the references; biases,
    normalization parameters and other non-kernel weights never are pruned.
    """
    check_model(model, built_for="pruning")
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
