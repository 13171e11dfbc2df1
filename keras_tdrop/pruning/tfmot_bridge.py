"""A bridge to TF-MOT: our masks into `prune_low_magnitude`, and back.

TF-MOT works only with tf_keras (Keras 2), and importing it switches
`tf.keras` to tf_keras for the whole process. So TF-MOT and tf_keras are
imported only when `to_tfmot` or `from_tfmot` is called, never by importing
keras_tdrop (extra: `pip install "keras-tdrop[tfmot]"`).
"""

import functools
import inspect

import keras
import numpy as np

from keras_tdrop import keras_adapter
from keras_tdrop.kernels import kernel_variables
from keras_tdrop.optional_imports import require
from keras_tdrop.pruning.masks import _check_model
from keras_tdrop.pruning.masks import prunable_kernels
from keras_tdrop.wrapping import clone_with_weights

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
    _check_model(model)
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
    tf_keras, tfmot = _import_tfmot()
    schedule = _resolve_schedule(schedule, tfmot)

    owners = _variable_owners(model)
    wrapped = {owners[path][0].name for path in paths}
    layers = {}
    for layer in model.layers:
        if isinstance(layer, keras.layers.InputLayer):
            continue
        target = _translate_layer(layer, tf_keras)
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
        _set_weights(inner, layer)
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


def from_tfmot(tf_model, model=None):
    """Weights and masks of a TF-MOT model, back in Keras 3.

    `tf_model` is a tf_keras model: what `to_tfmot` returned (wrapped,
    fine-tuned or not), its `strip_pruning` result, or any tf_keras model
    of the layers in `SUPPORTED_LAYERS`. With `model` (the Keras 3 model
    it was built from, not modified), the result is a copy of `model`
    (layers matched by name), keeping everything of the Keras 3 model
    that tf_keras does not know; without it, the Keras 3 architecture is
    rebuilt layer by layer from `tf_model`. Kernels are multiplied by their
    masks, as `strip_pruning` assumes they already are.

    Returns:
        `(keras_model, masks)`: the Keras 3 model with the tf_keras weights,
        and `{variable path of keras_model: mask}` read from the
        `PruneLowMagnitude` wrappers (empty for a stripped model).
    """
    if model is not None:
        _check_model(model)
    tf_keras, _ = _import_tfmot()
    if not isinstance(tf_model, tf_keras.Model):
        raise TypeError(
            "`tf_model` must be a tf_keras model (what to_tfmot returns). "
            f"Received: tf_model={tf_model!r}"
        )
    if model is None:
        copy = _rebuild_in_keras(tf_model, tf_keras)
    else:
        copy = clone_with_weights(model)
    sources = {}
    for layer in tf_model.layers:
        if _is_pruning_wrapper(layer):
            sources[layer.layer.name] = (layer.layer, layer)
        else:
            sources[layer.name] = (layer, None)
    masks = {}
    for layer in copy.layers:
        if not layer.weights:
            continue
        if layer.name not in sources:
            raise ValueError(
                f"`tf_model` has no layer named '{layer.name}' (the layers "
                "are matched by name). Received: tf_model with layers "
                f"{sorted(sources)}"
            )
        source, wrapper = sources[layer.name]
        _set_weights(layer, source)
        if wrapper is None:
            continue
        for weight, mask, _ in wrapper.pruning_vars:
            index = _index_of(source.weights, weight)
            target = layer.weights[index]
            value = mask.numpy()
            masks[target.path] = value.astype(target.dtype)
            target.assign(keras.ops.convert_to_numpy(target.value) * value)
    return copy, masks


def _is_pruning_wrapper(layer):
    # PruneLowMagnitude is not in TF-MOT's public API.
    return hasattr(layer, "layer") and hasattr(layer, "pruning_vars")


def _import_tfmot():
    what = "The TF-MOT bridge"
    tfmot = require("tensorflow_model_optimization", "tfmot", what)
    return require("tf_keras", "tfmot", what), tfmot


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


def _translate_layer(layer, lib):
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


def _rebuild_in_keras(tf_model, tf_keras):
    """The Keras 3 model of a tf_keras one (pruning wrappers looked through)."""
    layers = {}
    for layer in tf_model.layers:
        inner = layer.layer if _is_pruning_wrapper(layer) else layer
        if isinstance(inner, tf_keras.layers.InputLayer):
            continue
        if type(inner).__name__ not in SUPPORTED_LAYERS:
            raise ValueError(
                f"The TF-MOT bridge does not support layer '{inner.name}' of "
                f"type {type(inner).__name__}. Supported: "
                f"{', '.join(SUPPORTED_LAYERS)}"
            )
        layers[layer.name] = _translate_layer(inner, keras)
    tensors = {}

    def resolve(tf_tensor):
        if id(tf_tensor) in tensors:
            return tensors[id(tf_tensor)]
        layer, node = keras_adapter.keras2_producer(tf_tensor)
        if isinstance(layer, tf_keras.layers.InputLayer):
            tensors[id(tf_tensor)] = keras.Input(
                batch_shape=tuple(tf_tensor.shape),
                dtype=tf_tensor.dtype.name,
                name=layer.name,
            )
            return tensors[id(tf_tensor)]
        args, kwargs = keras.tree.map_structure(
            lambda x: resolve(x) if keras_adapter.keras2_producer(x) else x,
            (node.call_args, node.call_kwargs),
        )
        outputs = layers[layer.name](*args, **kwargs)
        for tf_output, output in zip(
            keras.tree.flatten(node.outputs), _flatten(outputs)
        ):
            tensors[id(tf_output)] = output
        return tensors[id(tf_tensor)]

    inputs = [resolve(t) for t in tf_model.inputs]
    outputs = [resolve(t) for t in tf_model.outputs]
    return keras.Model(
        inputs[0] if len(inputs) == 1 else inputs,
        outputs[0] if len(outputs) == 1 else outputs,
        name=tf_model.name,
    )


def _flatten(outputs):
    return list(outputs) if isinstance(outputs, (list, tuple)) else [outputs]


def _set_weights(target, source):
    values = [np.asarray(w) for w in source.get_weights()]
    shapes = [tuple(w.shape) for w in target.weights]
    if [v.shape for v in values] != shapes:
        raise ValueError(
            f"Layer '{source.name}' has weights of shapes "
            f"{[v.shape for v in values]}, its counterpart {shapes}."
        )
    target.set_weights(values)


def _index_of(weights, weight):
    for index, candidate in enumerate(weights):
        if candidate is weight:
            return index
    raise ValueError(f"Weight {weight.name} is not among the layer's weights.")


def _mask_variable(wrapper, weight, path):
    for candidate, mask, _ in wrapper.pruning_vars:
        if candidate is weight:
            return mask
    raise ValueError(
        f"TF-MOT does not prune the variable {path!r} of layer "
        f"'{wrapper.layer.name}'."
    )
