"""Channel rules of merges, concatenation and shape operations, as layers
and as raw `keras.ops` calls."""

import numpy as np
from keras import ops

from keras_tdrop import keras_adapter
from keras_tdrop.channels.rules import ChannelRule
from keras_tdrop.channels.rules import block_call
from keras_tdrop.channels.rules import channels_first
from keras_tdrop.channels.rules import same_shape_ids

__all__ = [
    "Concatenate",
    "Flatten",
    "GetItem",
    "KeepsLastAxis",
    "Merge",
    "Reduce",
    "Reshape",
]


class Merge(ChannelRule):
    """Add, Subtract, Multiply, Average, Maximum, Minimum, Divide (layers
    and raw ops): inputs of the output's width share their channels; a
    broadcast input of width 1 (a scalar gate) is left alone."""

    def trace(self, graph, node, op, ins):
        joined = same_shape_ids(graph, node, ins)
        if joined is None:
            return block_call(graph, node, op, ins, "no input has its width")
        return [joined]


def _axis(op, node, rank):
    axis = getattr(op, "axis", None)
    if axis is None:
        axis = node.arguments.kwargs.get("axis", -1)
    return axis % rank


class Concatenate(ChannelRule):
    """Concatenate on the channel axis places its inputs' channels side by
    side (offsets); on another axis, its inputs share their channels."""

    def trace(self, graph, node, op, ins):
        tensors = keras_adapter.node_inputs(node)
        rank = len(node.outputs[0].shape)
        if any(ids is None for ids in ins):
            return block_call(graph, node, op, ins, "an input is not followed")
        if _axis(op, node, rank) == rank - 1:
            return [np.concatenate(ins)]
        if len({t.shape[-1] for t in tensors}) != 1:
            return block_call(graph, node, op, ins, "its inputs' widths differ")
        for ids in ins[1:]:
            graph.union(ins[0], ids)
        return [ins[0]]


class Flatten(ChannelRule):
    """Flatten (channels_last): feature `p * C + c` is channel `c`."""

    def trace(self, graph, node, op, ins):
        shape = keras_adapter.node_inputs(node)[0].shape[1:]
        reason = channels_first(op)
        if reason is None and (ins[0] is None or None in shape):
            reason = "the flattened layout is not known"
        if reason is not None:
            return block_call(graph, node, op, ins, reason)
        return [np.tile(ins[0], int(np.prod(shape[:-1], dtype="int64")))]


class Reshape(ChannelRule):
    """Reshape (layer or raw op) that keeps the channel axis last, or that
    merges trailing axes into it (`(.., H, W, C) -> (.., H*W*C)`)."""

    def _factor(self, node):
        before = keras_adapter.node_inputs(node)[0].shape
        after = node.outputs[0].shape
        if before[-1] == after[-1]:
            return 1
        if None in before[1:] or after[-1] is None:
            return None
        width = before[-1]
        for start in range(len(before) - 1, 0, -1):
            if int(np.prod(before[start:], dtype="int64")) == after[-1]:
                return after[-1] // width
        return None

    def trace(self, graph, node, op, ins):
        factor = self._factor(node)
        if ins[0] is None or factor is None:
            return block_call(graph, node, op, ins, "it moves the channel axis")
        return [np.tile(ins[0], factor)]

    def _target(self, shape, old_in, new_in):
        shape = list(shape)
        if old_in == new_in:
            return tuple(shape)
        if shape[-1] is not None and shape[-1] != -1:
            shape[-1] = shape[-1] // old_in * new_in
        return tuple(shape)

    def configure(self, layer, node, config, weights, args, kwargs):
        old_in = keras_adapter.node_inputs(node)[0].shape[-1]
        config["target_shape"] = self._target(
            config["target_shape"], old_in, args[0].shape[-1]
        )
        return config

    def call(self, op, node, args, kwargs):
        old_in = keras_adapter.node_inputs(node)[0].shape[-1]
        return ops.reshape(
            args[0], self._target(op.newshape, old_in, args[0].shape[-1])
        )


class Reduce(ChannelRule):
    """A raw reduction (`ops.mean`, `ops.sum`, `ops.max`, ...): passes the
    channels when it reduces other axes only."""

    def trace(self, graph, node, op, ins):
        rank = len(keras_adapter.node_inputs(node)[0].shape)
        axis = getattr(op, "axis", None)
        axes = (
            range(rank)
            if axis is None
            else [a % rank for a in np.atleast_1d(axis).tolist()]
        )
        if rank - 1 in axes or ins[0] is None:
            return block_call(graph, node, op, ins, "it reduces the channels")
        return [ins[0]]


class GetItem(ChannelRule):
    """Slicing (`x[:, 0]`, `x[..., :k]`): passes the channels when the
    last axis is taken whole."""

    def trace(self, graph, node, op, ins):
        args = node.arguments.args
        key = args[1] if len(args) > 1 else node.arguments.kwargs.get("key")
        key = key if isinstance(key, tuple) else (key,)
        rank = len(keras_adapter.node_inputs(node)[0].shape)
        whole = slice(None, None, None)
        if any(k is None for k in key) or ins[0] is None:
            takes_last = True
        elif Ellipsis in key:
            takes_last = key[-1] is not Ellipsis and key[-1] != whole
        else:
            takes_last = len(key) == rank and key[-1] != whole
        if takes_last or (
            keras_adapter.node_inputs(node)[0].shape[-1]
            != node.outputs[0].shape[-1]
        ):
            return block_call(graph, node, op, ins, "it slices the channels")
        return [ins[0]]


class KeepsLastAxis(ChannelRule):
    """Transpose, expand_dims, squeeze, Permute, RepeatVector, ...: pass
    the channels when the last axis stays last and whole."""

    def __init__(self, transposes=False):
        self.transposes = transposes

    def trace(self, graph, node, op, ins):
        tensor, out = keras_adapter.node_inputs(node)[0], node.outputs[0]
        last_in, last_out = len(tensor.shape) - 1, len(out.shape) - 1
        moved = ins[0] is None or tensor.shape[-1] != out.shape[-1]
        axes = getattr(op, "axes", None)
        if self.transposes:
            moved = moved or axes is None or axes[-1] % (last_in + 1) != last_in
        dims = getattr(op, "dims", None)
        if dims is not None:
            moved = moved or dims[-1] != last_in
        axis = getattr(op, "axis", None)
        if axis is not None and not isinstance(axis, str):
            for a in np.atleast_1d(axis).tolist():
                last = (
                    last_out if type(op).__name__ == "ExpandDims" else last_in
                )
                moved = moved or a == -1 or a == last
        if moved:
            return block_call(
                graph, node, op, ins, "it moves or repeats the channel axis"
            )
        return [ins[0]]
