"""Reading a TF-MOT model back into Keras 3: `from_tfmot`.

Weights and the masks of the `PruneLowMagnitude` wrappers go into a copy of
the Keras 3 model, or into the Keras 3 architecture rebuilt from tf_keras.
"""

import keras

from keras_tdrop import keras_adapter
from keras_tdrop.kernels import check_model
from keras_tdrop.pruning.tfmot_layers import SUPPORTED_LAYERS
from keras_tdrop.pruning.tfmot_layers import copy_layer_weights
from keras_tdrop.pruning.tfmot_layers import import_tfmot
from keras_tdrop.pruning.tfmot_layers import translate_layer
from keras_tdrop.wrapping import clone_with_weights

__all__ = ["from_tfmot"]


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
        check_model(model, built_for="pruning")
    tf_keras, _ = import_tfmot()
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
        copy_layer_weights(layer, source)
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
        layers[layer.name] = translate_layer(inner, keras)
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


def _index_of(weights, weight):
    for index, candidate in enumerate(weights):
        if candidate is weight:
            return index
    raise ValueError(f"Weight {weight.name} is not among the layer's weights.")
