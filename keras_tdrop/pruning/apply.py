"""Applying pruning masks to a model, or to a copy of it."""

import keras
import numpy as np
from keras import ops

from keras_tdrop import keras_adapter
from keras_tdrop.kernels import check_model
from keras_tdrop.wrapping import clone_with_weights

__all__ = ["apply_masks", "check_inplace", "copy_model"]


def apply_masks(model, masks, inplace=False):
    """Multiplies each kernel named in `masks` by its mask.

    Returns a pruned copy of `model` (the caller's model is unchanged) unless
    `inplace=True`. Every path in `masks` must name a variable of the model
    with the mask's shape; nothing is changed otherwise.
    """
    check_model(model, built_for="pruning")
    check_inplace(inplace)
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
        paths = [v.path for v in model.variables]
        variables = dict(zip(paths, target.variables))
    for path, mask in masks.items():
        variable = variables[path]
        value = ops.convert_to_numpy(variable.value)
        variable.assign(value * np.asarray(mask, dtype=value.dtype))
    return target


def check_inplace(inplace):
    if not isinstance(inplace, bool):
        raise TypeError(
            f"`inplace` must be a bool. Received: inplace={inplace!r}"
        )


def copy_model(model):
    """A copy of `model` with its weights, graph or subclassed.

    A Sequential or functional model is cloned layer by layer; any other
    model is rebuilt from its config (its `get_config`) and given the
    weights by position.
    """
    if isinstance(model, keras.Sequential) or keras_adapter.is_graph_model(
        model
    ):
        return clone_with_weights(model)
    try:
        copy = keras.saving.deserialize_keras_object(
            keras.saving.serialize_keras_object(model)
        )
    except (NotImplementedError, TypeError, ValueError) as error:
        raise ValueError(
            f"Cannot copy model '{model.name}' ({type(model).__name__}): "
            "it does not rebuild from its config. Work on it in place "
            f"(inplace=True). Received error: {error}"
        ) from error
    copy.set_weights(model.get_weights())
    return copy


def _copy(model):
    # Variables correspond by position; seed generators of the copy get new
    # paths (seed_generator_1/...), so the paths themselves may differ.
    copy = copy_model(model)
    original = [tuple(v.shape) for v in model.variables]
    copied = [tuple(v.shape) for v in copy.variables]
    if original != copied:
        raise RuntimeError(
            "The copy of the model does not name its variables as the "
            "original does; prune it in place with inplace=True."
        )
    return copy
