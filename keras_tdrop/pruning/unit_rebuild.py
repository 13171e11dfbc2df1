"""Rebuilding a functional model without its removed units: fresh layers
of the same names, with the kept slices of the weights."""

import keras
import numpy as np
from keras import ops

from keras_tdrop import keras_adapter
from keras_tdrop.channels.rebuild import named_input
from keras_tdrop.pruning.unit_propagation import is_producer

__all__ = ["rebuild_without_units"]

L = keras.layers


def _new_layer(layer, out_removed, delta):
    config = layer.get_config()
    if out_removed:
        key = "units" if isinstance(layer, L.Dense) else "filters"
        config[key] -= len(out_removed)
    if delta is not None and np.any(delta) and not layer.use_bias:
        config["use_bias"] = True
    return layer.__class__.from_config(config)


def _set_weights(old, new, out_removed, in_removed, delta):
    if is_producer(old):
        kernel = ops.convert_to_numpy(old.kernel)
        width = kernel.shape[-1]
        bias = ops.convert_to_numpy(old.bias) if old.use_bias else None
        if delta is not None and np.any(delta):
            base = np.zeros(width) if bias is None else bias.astype("float64")
            bias = (base + delta).astype(kernel.dtype)
        if in_removed:
            kernel = np.delete(kernel, in_removed, axis=-2)
        if out_removed:
            kernel = np.delete(kernel, out_removed, axis=-1)
            bias = None if bias is None else np.delete(bias, out_removed)
        values = {"kernel": kernel, "bias": bias}
        for variable in new.weights:
            variable.assign(values[variable.name])
        return
    width = old.input.shape[-1] if in_removed and old.weights else None
    for old_variable, variable in zip(old.weights, new.weights):
        value = ops.convert_to_numpy(old_variable)
        if width and value.ndim and value.shape[-1] == width:
            value = np.delete(value, in_removed, axis=-1)
        variable.assign(value)


def rebuild_without_units(
    model, functional, nodes, removed, drop, states, folds
):
    """A new functional model of fresh layers of the same names, without
    the `removed` units and with the `folds` added to the consumers' biases.

    `states` and `folds` are what `propagate_removal` returns for `removed`;
    the layers named in `drop` are left out of the graph.
    """
    in_removed = {}
    for layer, inputs, _ in nodes:
        if len(inputs) == 1 and states.get(id(inputs[0])):
            in_removed[layer.name] = sorted(states[id(inputs[0])])
    built = []

    def call(node, args, kwargs):
        op = node.operation
        if op.name in drop:
            return args[0]
        out_removed = sorted(removed.get(op.name, ()))
        new = _new_layer(op, out_removed, folds.get(op.name))
        built.append((op, new, out_removed))
        return new(*args, **kwargs)

    inputs = [named_input(t) for t in functional.inputs]
    outputs = keras_adapter.run_graph(functional, inputs, call)
    inputs = keras.tree.pack_sequence_as(
        keras_adapter.inputs_structure(functional), inputs
    )
    new_model = keras.Model(inputs, outputs, name=model.name)
    for old, new, out_removed in built:
        _set_weights(
            old,
            new,
            out_removed,
            in_removed.get(old.name),
            folds.get(old.name),
        )
    return new_model
