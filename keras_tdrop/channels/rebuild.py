"""Rebuilding a model without some channels of its channel graph."""

import keras
import numpy as np
from keras import ops

from keras_tdrop import keras_adapter
from keras_tdrop.channels.rules import rule_for

__all__ = [
    "named_input",
    "rebuild",
    "sliced_weights",
]


def named_input(tensor, batch_shape=None):
    """A new `keras.Input` like the model input `tensor`, of the same name.

    Args:
        tensor: a KerasTensor made by a model's `InputLayer`.
        batch_shape: tuple or None, the new input's shape (with the batch
            axis); `tensor.shape` if None.
    """
    return keras.Input(
        batch_shape=tensor.shape if batch_shape is None else batch_shape,
        dtype=tensor.dtype,
        sparse=tensor.sparse,
        name=keras_adapter.producer(tensor).name,
    )


def _relative(variable):
    return "/".join(variable.path.split("/")[1:])


def sliced_weights(graph, layer, going, deltas=None):
    """`layer`'s weights as numpy arrays with the removed channels' slices
    deleted (`going[root]` is True for a removed root), and
    `deltas[id(layer)]` (a change of the output bias, over the old outputs)
    added."""
    arrays = [ops.convert_to_numpy(v) for v in layer.weights]
    delta = (deltas or {}).get(id(layer))
    bias = _bias_index(layer)
    cuts = [
        (piece, np.flatnonzero(going[graph.roots(piece.ids)]))
        for piece in graph.slices_of(layer)
    ]
    if delta is not None:
        if bias is None:
            arrays.append(delta.astype(arrays[0].dtype))
        else:
            arrays[bias] = (arrays[bias] + delta).astype(arrays[bias].dtype)
    for piece, positions in cuts:
        if len(positions):
            arrays[piece.index] = np.delete(
                arrays[piece.index], positions, axis=piece.axis
            )
    if delta is not None and bias is None:
        # The added bias loses the removed outputs as the kernel does.
        for piece, positions in cuts:
            if piece.role == "out" and piece.variable is layer.kernel:
                arrays[-1] = np.delete(arrays[-1], positions)
    return arrays


def _bias_index(layer):
    bias = getattr(layer, "bias", None)
    if bias is None:
        return None
    for index, variable in enumerate(layer.weights):
        if variable is bias:
            return index
    return None


class _Builder:
    def __init__(self, graph, removed, deltas, drop):
        self.graph, self.deltas = graph, deltas
        self.going = graph.flags(removed)
        self.drop = drop
        self.layers = {}
        self.models = {}
        self.pending = []

    def layer(self, layer, node, args, kwargs):
        if id(layer) in self.layers:
            return self.layers[id(layer)]
        arrays = sliced_weights(self.graph, layer, self.going, self.deltas)
        config = layer.get_config()
        if id(layer) in self.deltas and getattr(layer, "bias", 1) is None:
            config["use_bias"] = True
        rule = rule_for(layer)
        if rule is not None:
            config = rule.configure(layer, node, config, arrays, args, kwargs)
        try:
            new = layer.__class__.from_config(config)
        except Exception as error:
            if not layer.weights:
                # Nothing of it changes and nothing of it can be shared by
                # mistake: the layer itself serves (a reshaping `Patches`).
                self.layers[id(layer)] = layer
                return layer
            raise ValueError(
                f"Cannot rebuild layer '{layer.name}' "
                f"({type(layer).__name__}) from its config: "
                f"{type(error).__name__}: {error}. Keras needs a "
                "`get_config()` returning the constructor's arguments and an "
                "`__init__(self, ..., **kwargs)` passing `**kwargs` (name, "
                "trainable, dtype) to `super().__init__`."
            ) from error
        self.layers[id(layer)] = new
        self.pending.append((layer, new, arrays))
        return new

    def call(self, node, args, kwargs):
        op = node.operation
        if id(op) in self.drop:
            return args[0]
        if keras_adapter.is_graph_model(op):
            return self.nested(op)(*args, **kwargs)
        if isinstance(op, keras.layers.Layer):
            return self.layer(op, node, args, kwargs)(*args, **kwargs)
        rule = rule_for(op)
        if rule is not None:
            return rule.call(op, node, args, kwargs)
        return op(*args, **kwargs)

    def nested(self, model):
        if id(model) not in self.models:
            self.models[id(model)] = self.model(model)
        return self.models[id(model)]

    def model(self, model):
        functional = keras_adapter.functional_of(model)
        inputs = [named_input(t, self._shape(t)) for t in functional.inputs]
        outputs = keras_adapter.run_graph(functional, inputs, self.call)
        structure = keras_adapter.inputs_structure(functional)
        return keras.Model(
            keras.tree.pack_sequence_as(structure, inputs),
            outputs,
            name=model.name,
        )

    def _shape(self, tensor):
        ids = self.graph.tensors.get(id(tensor))
        shape = list(tensor.shape)
        if ids is not None:
            roots = self.graph.roots(ids)
            shape[-1] = int(np.sum(~self.going[roots]))
        return tuple(shape)

    def set_weights(self):
        for old, new, arrays in self.pending:
            old_names = [_relative(v) for v in old.weights]
            if len(arrays) > len(old_names):
                old_names.append(_relative(new.bias))
            by_name = dict(zip(old_names, arrays))
            in_order = len(arrays) == len(old.weights)
            for index, variable in enumerate(new.weights):
                name = _relative(variable)
                value = arrays[index] if in_order else by_name.get(name)
                if value is None:
                    raise RuntimeError(
                        f"No value for {variable.path} of rebuilt layer "
                        f"'{new.name}'."
                    )
                if tuple(value.shape) != tuple(variable.shape):
                    raise RuntimeError(
                        f"Rebuilt {variable.path} has shape "
                        f"{tuple(variable.shape)}, the sliced value "
                        f"{value.shape}."
                    )
                variable.assign(value)


def rebuild(graph, removed, deltas=None, drop=()):
    """A new functional model: `graph.model` without the channels whose
    roots are in `removed`, with `deltas` (`{id(layer): bias change}`)
    added to biases; operations whose id is in `drop` (identities at
    inference) are taken out. Fresh layers of the same names; the original
    model is not touched."""
    from keras_tdrop.channels.graph import ChannelGraph

    if not isinstance(graph, ChannelGraph):
        raise TypeError(
            "`graph` must be a ChannelGraph (see `channel_graph`). "
            f"Received: graph={graph!r}"
        )
    builder = _Builder(graph, removed, deltas or {}, set(drop))
    new_model = builder.model(graph.model)
    builder.set_weights()
    return new_model
