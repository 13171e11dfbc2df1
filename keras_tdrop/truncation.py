"""Truncating Triangular Dropout models to a narrower, ordinary model."""

import keras
import numpy as np

from keras_tdrop.layers.triangular_dropout import TriangularDropout
from keras_tdrop.layers.triangular_dropout import triangular_dropout_layers
from keras_tdrop.pruning.unit_removal import CHANNELWISE
from keras_tdrop.pruning.unit_removal import PRODUCERS
from keras_tdrop.pruning.unit_removal import remove_units


def _inbound_layer(layer):
    """The one layer whose output `layer` consumes, or None for an input."""
    nodes = layer._inbound_nodes
    if len(nodes) != 1:
        raise ValueError(
            f"Cannot truncate at layer '{layer.name}': it is called "
            f"{len(nodes)} times in the model; truncation needs one call."
        )
    tensors = nodes[0].input_tensors
    if len(tensors) != 1:
        raise ValueError(
            f"Cannot truncate through layer '{layer.name}': it has "
            f"{len(tensors)} inputs."
        )
    source = tensors[0]._keras_history.operation
    if isinstance(source, keras.layers.InputLayer):
        return None
    return source


def _check_single_use(layer, model, masked):
    uses = len(layer._outbound_nodes)
    if uses != 1:
        raise ValueError(
            f"Cannot truncate at TriangularDropout layer '{masked.name}': "
            f"layer '{layer.name}' on its input path has {uses} consumers; "
            "its units can only be removed when they feed the "
            "TriangularDropout layer alone."
        )
    if any(
        t._keras_history.operation is layer
        for t in keras.tree.flatten(model.outputs)
    ):
        raise ValueError(
            f"Cannot truncate at TriangularDropout layer '{masked.name}': "
            f"the output of layer '{layer.name}' is a model output."
        )


def producer_of(layer, model=None):
    """The Dense or Conv layer whose units `layer`'s input carries, found
    through channel-wise layers (activations, BatchNormalization, dropout,
    pooling: `keras_tdrop.pruning.shrink.CHANNELWISE`).

    With `model`, also checks that the producer and the layers after it
    feed nothing but `layer` (no other consumer, no model output), so that
    removing the producer's units changes nothing else.

    Raises:
        ValueError: naming the layer met when there is no such producer.
    """
    source = _inbound_layer(layer)
    while isinstance(source, CHANNELWISE):
        if model is not None:
            _check_single_use(source, model, layer)
        source = _inbound_layer(source)
    if isinstance(source, PRODUCERS):
        if model is not None:
            _check_single_use(source, model, layer)
        return source
    found = (
        "a model input"
        if source is None
        else (f"layer '{source.name}' ({type(source).__name__})")
    )
    raise ValueError(
        f"Cannot truncate at TriangularDropout layer '{layer.name}': its "
        f"input comes from {found}, not from a Dense or Conv layer "
        "(through channel-wise layers only)."
    )


def _widths(layers, width):
    if isinstance(width, dict):
        names = {layer.name for layer in layers}
        unknown = sorted(set(width) - names)
        if unknown:
            raise ValueError(
                "`width` names layers that are not TriangularDropout layers "
                f"of the model: {unknown}; they are {sorted(names)}. "
                f"Received: width={width!r}"
            )
        chosen = {layer.name: layer.width for layer in layers}
        chosen.update(width)
    else:
        chosen = {layer.name: width for layer in layers}
    widths = {}
    for layer in layers:
        w = chosen[layer.name]
        if w is None:
            w = layer.width
        if w is None:
            w = layer.units
        if (
            isinstance(w, bool)
            or not isinstance(w, (int, np.integer))
            or not 1 <= w <= layer.units
        ):
            raise ValueError(
                f"`width` for layer '{layer.name}' must be an int in "
                f"[1, {layer.units}]. Received: width={w!r}"
            )
        widths[layer.name] = int(w)
    return widths


def truncate(model, width=None):
    """A plain, narrower copy of a model trained with Triangular Dropout.

    For every `TriangularDropout` layer with width w, the Dense or Conv
    layer producing its input keeps only its first w units (`W[..., :w]`,
    `b[:w]`), the element-wise layers in between (BatchNormalization,
    activations) are sliced along, the consuming layer keeps only the
    matching input rows or channels (`W_next[:w, :]`), and the
    `TriangularDropout` layer itself is removed. The result is an ordinary
    Keras model whose outputs equal `model`'s outputs after
    `set_width(model, width)`, with exactly the parameters of an
    architecture built at width w. `model` is not modified.

    The graph surgery is `keras_tdrop.pruning.shrink.remove_units` in
    strict mode: a structure where removing units cannot be propagated
    exactly (the masked tensor feeds a reshape, a concatenation, two
    consumers, ...) raises a `ValueError` naming the layer, instead of
    returning a different function.

    Args:
        model: a functional or Sequential Keras model with
            `TriangularDropout` layers (at its top level).
        width: an int (the same width for every layer), a dict
            `{layer name: int}` for some layers, or None. Layers not given
            a width keep the one set on them (`layer.width`), else all
            their units.

    Returns:
        A new `keras.Model` without `TriangularDropout` layers.

    Example:
    >>> keras_tdrop.set_width(model, 8)
    >>> small = keras_tdrop.truncate(model, 8)  # same outputs, fewer params
    """
    if not isinstance(model, keras.Model):
        raise TypeError(
            f"`model` must be a keras.Model. Received: model={model!r}"
        )
    layers = [
        layer for layer in model.layers if isinstance(layer, TriangularDropout)
    ]
    nested = [
        layer.name
        for layer in triangular_dropout_layers(model)
        if layer not in layers
    ]
    if nested:
        raise ValueError(
            f"Cannot truncate model '{model.name}': TriangularDropout layers "
            f"{nested} sit inside nested models; truncate the nested model "
            "or flatten it first."
        )
    if not layers:
        raise ValueError(
            f"Model '{model.name}' has no TriangularDropout layer to "
            "truncate at."
        )
    widths = _widths(layers, width)
    keep = {}
    for layer in layers:
        producer = producer_of(layer, model)
        units = np.arange(widths[layer.name])
        if producer.name in keep and len(keep[producer.name]) != len(units):
            raise ValueError(
                f"Cannot truncate: layer '{producer.name}' feeds several "
                "TriangularDropout layers with different widths."
            )
        keep[producer.name] = units
    new_model, _ = remove_units(
        model,
        keep,
        drop_layers=tuple(layer.name for layer in layers),
        strict=True,
    )
    return new_model
