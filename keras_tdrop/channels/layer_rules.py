"""Channel rules of the layers that hold per-channel weights.

Producers (Dense, convolutions, EinsumDense, Embedding) read their input
channels with kernel rows and write new channels with kernel columns;
depthwise convolutions keep their channels; normalizations and channel-wise
scales hold one parameter per channel; MultiHeadAttention is pruned by
whole heads.
"""

import numpy as np

from keras_tdrop import keras_adapter
from keras_tdrop.channels.rules import ChannelRule
from keras_tdrop.channels.rules import block_call
from keras_tdrop.channels.rules import channels_first
from keras_tdrop.channels.rules import trace_model

__all__ = [
    "ChannelwiseParams",
    "Conv",
    "ConvTranspose",
    "Depthwise",
    "EinsumDense",
    "Embedding",
    "GroupNormalization",
    "LayerNormalization",
    "NestedModel",
    "Producer",
    "Separable",
    "mixing_activation",
]

_MIXING = ("softmax", "log_softmax")


def mixing_activation(layer):
    """Whether `layer`'s activation mixes the channels (a softmax)."""
    activation = getattr(layer, "activation", None)
    return getattr(activation, "__name__", str(activation)) in _MIXING


class Producer(ChannelRule):
    """Dense and Conv1D/2D/3D (with `groups`): input channels are kernel
    rows (axis -2), output channels kernel columns (axis -1).

    With `groups=g > 1`, each group's inputs and outputs are one unit: a
    group is removed whole, and `groups` shrinks with it.
    """

    count_key = "units"
    in_axis, out_axis = -2, -1

    def trace(self, graph, node, layer, ins):
        reason = channels_first(layer)
        if reason is not None:
            return block_call(graph, node, layer, ins, reason)
        kernel = layer.kernel
        groups = getattr(layer, "groups", 1) or 1
        out = graph.output_ids(layer, kernel, self.out_axis)
        if layer.bias is not None:
            graph.bind(layer, layer.bias, 0, out, "param")
        if ins[0] is not None:
            if groups == 1:
                graph.bind(layer, kernel, self.in_axis, ins[0], "in")
            else:
                per_in = len(ins[0]) // groups
                per_out = len(out) // groups
                for g in range(groups):
                    block = np.concatenate(
                        [
                            ins[0][g * per_in : (g + 1) * per_in],
                            out[g * per_out : (g + 1) * per_out],
                        ]
                    )
                    graph.union(np.repeat(block[0], len(block)), block)
        if mixing_activation(layer):
            graph.block(out, f"'{layer.name}': its activation mixes units")
        return [out]

    def configure(self, layer, node, config, weights, args, kwargs):
        width = weights[0].shape[self.out_axis]
        if getattr(layer, "groups", 1) > 1:
            per_out = layer.kernel.shape[self.out_axis] // layer.groups
            config["groups"] = width // per_out
        config[self.count_key] = width
        return config


class Conv(Producer):
    count_key = "filters"


class ConvTranspose(Producer):
    """Conv1D/2D/3DTranspose: kernel `(*k, filters, in)`."""

    count_key = "filters"
    in_axis, out_axis = -1, -2


class Depthwise(ChannelRule):
    """DepthwiseConv1D/2D: output channel `c * m + j` comes from input
    channel `c` alone (m = depth_multiplier), so they are one unit."""

    def trace(self, graph, node, layer, ins):
        reason = channels_first(layer)
        if reason is not None or ins[0] is None:
            return block_call(
                graph, node, layer, ins, reason or "its input is not followed"
            )
        graph.bind(layer, layer.kernel, -2, ins[0], "out")
        out = np.repeat(ins[0], layer.depth_multiplier)
        if layer.bias is not None:
            graph.bind(layer, layer.bias, 0, out, "param")
        return [out]


class Separable(ChannelRule):
    """SeparableConv1D/2D: a depthwise part per input channel, then a
    pointwise producer."""

    def trace(self, graph, node, layer, ins):
        reason = channels_first(layer)
        if reason is not None or ins[0] is None:
            return block_call(
                graph, node, layer, ins, reason or "its input is not followed"
            )
        multiplier = layer.depth_multiplier
        graph.bind(layer, layer.depthwise_kernel, -2, ins[0], "in")
        graph.bind(
            layer,
            layer.pointwise_kernel,
            -2,
            np.repeat(ins[0], multiplier),
            "in",
        )
        out = graph.output_ids(layer, layer.pointwise_kernel, -1)
        if layer.bias is not None:
            graph.bind(layer, layer.bias, 0, out, "param")
        return [out]

    def configure(self, layer, node, config, weights, args, kwargs):
        config["filters"] = weights[1].shape[-1]
        return config


class Embedding(ChannelRule):
    """Embedding: its columns are new channels."""

    def trace(self, graph, node, layer, ins):
        return [graph.output_ids(layer, layer.embeddings, -1)]

    def configure(self, layer, node, config, weights, args, kwargs):
        config["output_dim"] = weights[0].shape[-1]
        return config


class EinsumDense(ChannelRule):
    """EinsumDense whose kernel reads the input's last axis (a row) and
    writes the output's last axis (a column), e.g. `"abc,cd->abd"`."""

    def _letters(self, layer):
        left, out = layer.equation.split("->")
        source, kernel = left.split(",")
        return source, kernel, out

    def trace(self, graph, node, layer, ins):
        source, kernel, out = self._letters(layer)
        x, y = source[-1], out[-1]
        if x not in kernel or x in out or y not in kernel or y in source:
            return block_call(
                graph,
                node,
                layer,
                ins,
                f"its equation {layer.equation!r} does not map the last "
                "axis to the last axis",
            )
        if ins[0] is not None:
            graph.bind(layer, layer.kernel, kernel.index(x), ins[0], "in")
        ids = graph.output_ids(layer, layer.kernel, kernel.index(y))
        bias_axes = layer.bias_axes or ""
        if layer.bias is not None and y in bias_axes:
            graph.bind(layer, layer.bias, bias_axes.index(y), ids, "param")
        return [ids]

    def configure(self, layer, node, config, weights, args, kwargs):
        source, kernel, out = self._letters(layer)
        shape = list(config["output_shape"])
        shape[-1] = weights[0].shape[kernel.index(out[-1])]
        config["output_shape"] = shape
        return config


class ChannelwiseParams(ChannelRule):
    """A layer acting on each channel alone with parameters of the channel
    axis (BatchNormalization over the last axis, PReLU, LayerScale)."""

    def trace(self, graph, node, layer, ins):
        tensors = keras_adapter.node_inputs(node)
        axis = getattr(layer, "axis", -1)
        axis = axis[0] if isinstance(axis, (list, tuple)) and axis else axis
        rank = len(tensors[0].shape)
        if ins[0] is None or axis % rank != rank - 1:
            return block_call(
                graph, node, layer, ins, "its axis is not the channel axis"
            )
        width = len(ins[0])
        for variable in layer.weights:
            shape = tuple(variable.shape)
            if shape and shape[-1] == width:
                graph.bind(layer, variable, -1, ins[0], "param")
            elif int(np.prod(shape)) != 1:
                return block_call(
                    graph, node, layer, ins, "a parameter is not per channel"
                )
        return [ins[0]]


class GroupNormalization(ChannelRule):
    """GroupNormalization over the channel axis: whole groups go."""

    def trace(self, graph, node, layer, ins):
        rank = len(keras_adapter.node_inputs(node)[0].shape)
        if ins[0] is None or layer.axis % rank != rank - 1:
            return block_call(
                graph, node, layer, ins, "its axis is not the channel axis"
            )
        size = len(ins[0]) // layer.groups
        for g in range(layer.groups):
            block = ins[0][g * size : (g + 1) * size]
            graph.union(np.repeat(block[0], size), block)
        for variable in layer.weights:
            graph.bind(layer, variable, -1, ins[0], "param")
        return [ins[0]]

    def configure(self, layer, node, config, weights, args, kwargs):
        width = args[0].shape[-1]
        config["groups"] = width // (layer.gamma.shape[-1] // layer.groups)
        return config


class LayerNormalization(ChannelRule):
    """LayerNormalization: its statistics mix the normalized axes, so
    channels it normalizes over are kept; over other axes it passes them."""

    def trace(self, graph, node, layer, ins):
        rank = len(keras_adapter.node_inputs(node)[0].shape)
        axes = (
            layer.axis
            if isinstance(layer.axis, (list, tuple))
            else [layer.axis]
        )
        if any(a % rank == rank - 1 for a in axes):
            return block_call(
                graph,
                node,
                layer,
                ins,
                "it normalizes over the channels, so removing one changes "
                "the others",
            )
        return [ins[0]]


class NestedModel(ChannelRule):
    """A functional or Sequential model used as a layer: traced inside."""

    def trace(self, graph, node, model, ins):
        return trace_model(graph, model, ins)
