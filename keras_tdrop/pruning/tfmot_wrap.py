"""Wrapping a Keras 3 model for TF-MOT: `to_tfmot`.

The architecture is rebuilt in tf_keras, the pruned layers wrapped with
`prune_low_magnitude` and our masks assigned into the wrappers.
"""

import functools

import keras
import numpy as np

from keras_tdrop import keras_adapter
from keras_tdrop.kernels import check_model
from keras_tdrop.kernels import kernel_variables
from keras_tdrop.pruning.prunable import prunable_kernels
from keras_tdrop.pruning.tfmot_layers import SUPPORTED_LAYERS
from keras_tdrop.pruning.tfmot_layers import copy_layer_weights
from keras_tdrop.pruning.tfmot_layers import import_tfmot
from keras_tdrop.pruning.tfmot_layers import translate_layer

__all__ = ["to_tfmot"]


def to_tfmot(
    model,
    masks=None,
    schedule="fixed",
    exclude=None,
    exclude_logits=True,
    **prune_kwargs,
):
    """The tf_keras model of `model`, wrapped by TF-MOT, holding our masks.

    Rebuilds the architecture layer by layer in tf_keras (same layer
    names), copies the weights, wraps with `prune_low_magnitude` the layers
    whose kernels are pruned, assigns `masks` into the wrappers' `mask`
    variables and multiplies the kernels by them, so the tf_keras model
    computes what the masked Keras model computes. Continue in TF-MOT:
    `fit(..., callbacks=[tfmot.sparsity.keras.UpdatePruningStep()])`,
    `strip_pruning`, its TFLite path, then `from_tfmot` to come back.

    With `schedule="fixed"` the masks never change during fine-tuning (a
    `PruningSchedule` that never prunes): pruned weights stay exactly zero.
    A TF-MOT schedule (`ConstantSparsity`, `PolynomialDecay`, ...) lets
    TF-MOT recompute the masks by magnitude at its steps, starting from
    `masks` (or from ones when `masks` is None).

    Args:
        model: a built Sequential or functional Keras 3 model of the layers
            in `SUPPORTED_LAYERS` (strip TargetedDropout wrappers first).
        masks: `{variable path: 0/1 array}` as `compute_masks` returns;
            required with `schedule="fixed"`. TF-MOT prunes Dense, Conv and
            the pointwise kernel of separable convolutions, not depthwise
            kernels: masks on those are refused (compute the masks with
            `exclude=`).
        schedule: `"fixed"` or a `tfmot.sparsity.keras.PruningSchedule`.
        exclude, exclude_logits: which layers are wrapped when `masks` is
            None (as in `compute_masks`).
        **prune_kwargs: passed to `prune_low_magnitude` (`block_size`,
            `block_pooling_type`, `sparsity_m_by_n`).

    Returns:
        A tf_keras model with `PruneLowMagnitude` wrappers named
        `prune_low_magnitude_<layer name>`.

    Example:
    >>> masks = compute_masks(model, 0.8)
    >>> tf_model = to_tfmot(model, masks)
    >>> tf_model.compile(...)
    >>> tf_model.fit(x, y, callbacks=[
    ...     tfmot.sparsity.keras.UpdatePruningStep()])
    >>> model2, masks2 = from_tfmot(tf_model, model)  # masks2 == masks
    """
    check_model(model, built_for="pruning")
    _check_architecture(model)
    if isinstance(schedule, str) and schedule != "fixed":
        raise ValueError(
            "`schedule` must be 'fixed' or a tfmot.sparsity.keras."
            f"PruningSchedule. Received: schedule={schedule!r}"
        )
    if masks is None:
        if isinstance(schedule, str):
            raise ValueError(
                "`masks` is required with schedule='fixed'. Received: "
                "masks=None"
            )
        owners = _variable_owners(model)
        paths = {
            v.path
            for v in prunable_kernels(model, exclude, exclude_logits)
            if _tfmot_prunes(owners[v.path][0], v)
        }
        masks = {}
    else:
        _check_masks(model, masks)
        paths = set(masks)
    tf_keras, tfmot = import_tfmot()
    schedule = _resolve_schedule(schedule, tfmot)

    owners = _variable_owners(model)
    wrapped = {owners[path][0].name for path in paths}
    layers = {}
    for layer in model.layers:
        if isinstance(layer, keras.layers.InputLayer):
            continue
        target = translate_layer(layer, tf_keras)
        if layer.name in wrapped:
            target = tfmot.sparsity.keras.prune_low_magnitude(
                target, pruning_schedule=schedule, **prune_kwargs
            )
        layers[layer.name] = target
    tf_model = _rebuild(model, layers, tf_keras)

    for layer in model.layers:
        if layer.name not in layers or not layer.weights:
            continue
        target = layers[layer.name]
        inner = getattr(target, "layer", target)
        copy_layer_weights(inner, layer)
    for path in paths:
        layer, index = owners[path]
        wrapper = layers[layer.name]
        weight = wrapper.layer.weights[index]
        mask_var = _mask_variable(wrapper, weight, path)
        if path in masks:
            mask = np.asarray(masks[path], dtype=mask_var.dtype.as_numpy_dtype)
            mask_var.assign(mask)
            weight.assign(weight.numpy() * mask)
    return tf_model


@functools.cache
def _fixed_schedule_class(tfmot):
    import tensorflow as tf

    base = tfmot.sparsity.keras.PruningSchedule

    class FixedMasks(base):
        """Never recomputes the masks: they stay what was assigned."""

        def __call__(self, step):
            return tf.constant(False), tf.constant(0.0, dtype=tf.float32)

        def get_config(self):
            return {"class_name": "FixedMasks", "config": {}}

    return FixedMasks


def _resolve_schedule(schedule, tfmot):
    if isinstance(schedule, str) and schedule == "fixed":
        return _fixed_schedule_class(tfmot)()
    if isinstance(schedule, tfmot.sparsity.keras.PruningSchedule):
        return schedule
    raise ValueError(
        "`schedule` must be 'fixed' or a tfmot.sparsity.keras."
        f"PruningSchedule. Received: schedule={schedule!r}"
    )


def _check_architecture(model):
    if not model.layers or not model.inputs:
        raise ValueError(
            "`model` must be a Sequential or functional model built on an "
            f"input shape. Received: model '{model.name}'"
        )
    for layer in model.layers:
        if isinstance(layer, keras.layers.InputLayer):
            continue
        name = type(layer).__name__
        if name not in SUPPORTED_LAYERS:
            hint = (
                " (strip_targeted_dropout first)"
                if name == "TargetedDropout"
                else ""
            )
            raise ValueError(
                f"The TF-MOT bridge does not support layer '{layer.name}' of "
                f"type {name}{hint}. Supported: {', '.join(SUPPORTED_LAYERS)}"
            )
        calls = sum(n.operation is layer for n in keras_adapter.nodes(model))
        if calls != 1:
            raise ValueError(
                f"Layer '{layer.name}' is called {calls} times; the TF-MOT "
                "bridge supports layers called once."
            )


def _variable_owners(model):
    owners = {}
    for layer in model.layers:
        for index, variable in enumerate(layer.weights):
            owners[variable.path] = (layer, index)
    return owners


def _check_masks(model, masks):
    if not isinstance(masks, dict):
        raise TypeError(
            "`masks` must be a dict of variable path -> array. Received: "
            f"masks={type(masks).__name__}"
        )
    owners = _variable_owners(model)
    unsupported = []
    for path, mask in masks.items():
        if path not in owners:
            raise ValueError(
                "`masks` names a variable the model does not have. "
                f"Received: path={path!r}"
            )
        layer, index = owners[path]
        variable = layer.weights[index]
        if tuple(np.shape(mask)) != tuple(variable.shape):
            raise ValueError(
                f"The mask for {path!r} has shape {np.shape(mask)}, the "
                f"variable has {tuple(variable.shape)}."
            )
        values = np.asarray(mask)
        if not np.all((values == 0) | (values == 1)):
            raise ValueError(f"The mask for {path!r} must hold only 0 and 1.")
        if not _tfmot_prunes(layer, variable):
            unsupported.append(path)
    if unsupported:
        raise ValueError(
            "TF-MOT cannot hold masks for these variables (it prunes Dense "
            "and Conv kernels and pointwise kernels, never depthwise "
            "kernels, biases or normalization): "
            f"{unsupported}. Compute the masks with `exclude=` for them."
        )


def _tfmot_prunes(layer, variable):
    """Whether TF-MOT's registry prunes this variable of this layer."""
    name = type(layer).__name__
    if not any(variable is k for k in kernel_variables(layer)):
        return False
    return name in ("Dense", "Conv1D", "Conv2D") or (
        name == "SeparableConv2D" and variable.name == "pointwise_kernel"
    )


def _rebuild(model, layers, tf_keras):
    """Calls the tf_keras layers along the Keras 3 model's graph (walked
    with `keras_tdrop.keras_adapter`)."""
    functional = keras_adapter.functional_of(model)
    inputs = [
        tf_keras.Input(
            batch_shape=tuple(t.shape),
            dtype=t.dtype,
            name=keras_adapter.producer(t).name,
        )
        for t in functional.inputs
    ]

    def call(node, args, kwargs):
        operation = node.operation
        if operation.name not in layers:
            raise ValueError(
                f"The TF-MOT bridge does not support operation "
                f"'{operation.name}' ({type(operation).__name__}): write it "
                f"as a layer. Supported: {', '.join(SUPPORTED_LAYERS)}"
            )
        return layers[operation.name](*args, **kwargs)

    outputs = keras.tree.flatten(keras_adapter.run_graph(model, inputs, call))
    return tf_keras.Model(
        inputs[0] if len(inputs) == 1 else inputs,
        outputs[0] if len(outputs) == 1 else outputs,
        name=model.name,
    )


def _mask_variable(wrapper, weight, path):
    for candidate, mask, _ in wrapper.pruning_vars:
        if candidate is weight:
            return mask
    raise ValueError(
        f"TF-MOT does not prune the variable {path!r} of layer "
        f"'{wrapper.layer.name}'."
    )
