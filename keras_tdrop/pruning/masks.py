"""Post hoc pruning masks, chosen by the targeting functions of training."""

import keras
import numpy as np
from keras import ops

from keras_tdrop import targeting as targeting_lib
from keras_tdrop.kernels import iter_layers
from keras_tdrop.kernels import kernel_variables
from keras_tdrop.kernels import resolve_exclude
from keras_tdrop.wrapping import clone_with_weights


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
    return kernels


def compute_masks(
    model, fraction, targeting="weight", exclude=None, exclude_logits=True
):
    """Magnitude pruning masks, `{variable path: 0/1 array}` (1 = keep).

    For every prunable kernel, `fraction` p removes exactly `floor(p * rows)`
    lowest-|w| weights per output column (`targeting="weight"`) or
    `floor(p * cols)` lowest-L2 columns (`"unit"`); p is uniform per layer, as
    in for-ai/TD's pruning evaluation. Masks have the kernel's shape and
    dtype, TF-MOT's convention.

    Args:
        model: a built `keras.Model` (TargetedDropout wrappers are looked
            through).
        fraction: float in [0, 1].
        targeting: `"weight"` or `"unit"`.
        exclude: layer name(s) or a predicate `layer -> bool`.
        exclude_logits: bool, whether to leave the logits layer unpruned.

    Example:
    >>> masks = compute_masks(model, 0.8)
    >>> {path: m.mean() for path, m in masks.items()}  # ~0.2 each
    """
    targeting_lib.check_rate("fraction", fraction)
    targeting_lib.check_targeting(targeting)
    masks = {}
    for kernel in prunable_kernels(model, exclude, exclude_logits):
        pruned = targeting_lib.targeted_mask(kernel.value, fraction, targeting)
        masks[kernel.path] = 1 - ops.convert_to_numpy(pruned).astype(
            kernel.dtype
        )
    return masks


def apply_masks(model, masks, inplace=False):
    """Multiplies each kernel named in `masks` by its mask.

    Returns a pruned copy of `model` (the caller's model is unchanged) unless
    `inplace=True`. Every path in `masks` must name a variable of the model
    with the mask's shape; nothing is changed otherwise.
    """
    _check_model(model)
    if not isinstance(masks, dict):
        raise TypeError(
            f"`masks` must be a dict of variable path -> array. "
            f"Received: masks={type(masks).__name__}"
        )
    variables = {v.path: v for v in model.variables}
    for path, mask in masks.items():
        if path not in variables:
            raise ValueError(
                f"`masks` names a variable the model does not have. "
                f"Received: path={path!r}"
            )
        if tuple(np.shape(mask)) != tuple(variables[path].shape):
            raise ValueError(
                f"The mask for {path!r} has shape {np.shape(mask)}, the "
                f"variable has {tuple(variables[path].shape)}."
            )
    target = model if inplace else _copy(model)
    if not inplace:
        variables = {v.path: v for v in target.variables}
    for path, mask in masks.items():
        variable = variables[path]
        value = ops.convert_to_numpy(variable.value)
        variable.assign(value * np.asarray(mask, dtype=value.dtype))
    return target


def _copy(model):
    copy = clone_with_weights(model)
    original = [v.path for v in model.variables]
    copied = [v.path for v in copy.variables]
    if original != copied:
        raise RuntimeError(
            "The copy of the model does not name its variables as the "
            "original does; prune it in place with inplace=True."
        )
    return copy


def prune(
    model,
    fraction,
    targeting="weight",
    exclude=None,
    exclude_logits=True,
    inplace=False,
):
    """Returns a copy of `model` pruned at `fraction` (see `compute_masks`).

    Example:
    >>> pruned = prune(model, 0.9, targeting="weight")
    """
    masks = compute_masks(model, fraction, targeting, exclude, exclude_logits)
    return apply_masks(model, masks, inplace=inplace)
