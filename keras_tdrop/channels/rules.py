"""The rule table: how channels flow through each type of operation.

A rule traces one call (which channel ids its outputs carry, which weight
slices read or write them, what must be kept) and, for shrinking, says how
to rebuild the operation with fewer channels. Rules are looked up by type
through the MRO, so a rule for `keras.layers.Conv` serves every
convolution; `register_channel_rule` adds or overrides one for a custom
layer. Anything without a rule keeps its channels, with the reason.
"""

from keras_tdrop import keras_adapter

__all__ = [
    "Blocking",
    "ChannelRule",
    "PassThrough",
    "block_call",
    "channels_first",
    "describe",
    "register_channel_rule",
    "rule_for",
    "same_shape_ids",
    "trace_model",
    "tracked",
]

_RULES = {}


class ChannelRule:
    """How channels flow through one type of operation.

    Subclasses implement `trace`; layers whose config names a channel count
    (units, filters, heads, a target shape) also implement `configure`;
    raw operations whose arguments name one implement `call`.
    """

    def trace(self, graph, node, op, ins):
        """Returns the channel ids of each output of `node`.

        Args:
            graph: the `ChannelGraph` being built (`fresh`, `bind`,
                `output_ids`, `union`, `block`).
            node: the call (see `keras_adapter.node_inputs`, `node.outputs`).
            op: the operation called.
            ins: per input tensor of the call, its channel ids or None.
        """
        raise NotImplementedError

    def configure(self, layer, node, config, weights, args, kwargs):
        """The config of `layer` rebuilt with `weights` (new numpy arrays,
        in `layer.weights` order) and called on `args`/`kwargs` where the
        original call was `node`."""
        return config

    def call(self, op, node, args, kwargs):
        """Calls a raw operation on the rebuilt graph's tensors."""
        return op(*args, **kwargs)


def register_channel_rule(op_type, rule):
    """Sets the channel rule of a layer or operation type (and subclasses).

    Args:
        op_type: a `keras.layers.Layer` or `keras.Operation` subclass.
        rule: a `ChannelRule`, e.g. `PassThrough()` for a layer that acts
            on each channel alone, `ChannelwiseParams()` for one that also
            holds one parameter per channel.

    Example:
    >>> register_channel_rule(MyScale, ChannelwiseParams())
    """
    if not isinstance(op_type, type):
        raise TypeError(
            f"`op_type` must be a class. Received: op_type={op_type!r}"
        )
    if not isinstance(rule, ChannelRule):
        raise TypeError(
            f"`rule` must be a ChannelRule. Received: rule={rule!r}"
        )
    _RULES[op_type] = rule


def rule_for(op):
    """The registered rule of `op`'s type (through the MRO), or None."""
    for cls in type(op).__mro__:
        if cls in _RULES:
            return _RULES[cls]
    return None


def tracked(tensor):
    """Whether a tensor has channels to follow: a float tensor of rank >= 2
    with a known last axis."""
    shape = getattr(tensor, "shape", None)
    dtype = str(getattr(tensor, "dtype", ""))
    return (
        shape is not None
        and len(shape) >= 2
        and shape[-1] is not None
        and ("float" in dtype or "bfloat" in dtype)
    )


def describe(op):
    return f"'{op.name}' ({type(op).__name__})"


def block_call(graph, node, op, ins, reason):
    """Blocks every channel of the call's inputs and outputs for `reason`.

    With `strict=True` on the graph, raises a ValueError naming `op`.
    """
    reason = f"{describe(op)}: {reason}"
    if getattr(graph, "strict", False):
        raise ValueError(f"Cannot follow channels through {reason}.")
    for ids in ins:
        if ids is not None:
            graph.block(ids, reason)
    outs = []
    for tensor in node.outputs:
        if tracked(tensor):
            ids = graph.fresh(tensor.shape[-1])
            graph.block(ids, reason)
            outs.append(ids)
        else:
            outs.append(None)
    return outs


def trace_model(graph, model, inputs):
    """Traces every call of `model` given its inputs' ids; returns the ids
    of its outputs (flat)."""
    functional = keras_adapter.functional_of(model)
    for tensor, ids in zip(functional.inputs, inputs):
        graph.tensors[id(tensor)] = ids if tracked(tensor) else None
    for node in keras_adapter.nodes(functional):
        op = node.operation
        ins = [
            graph.tensors.get(id(t)) for t in keras_adapter.node_inputs(node)
        ]
        rule = rule_for(op)
        if rule is None and keras_adapter.is_graph_model(op):
            from keras_tdrop.channels.layer_rules import NestedModel

            rule = NestedModel()
        if rule is None:
            outs = block_call(
                graph,
                node,
                op,
                ins,
                "the channel graph has no rule for it (register one with "
                "register_channel_rule)",
            )
        else:
            outs = rule.trace(graph, node, op, ins)
        for tensor, ids in zip(node.outputs, outs):
            if ids is not None and not tracked(tensor):
                ids = None
            if ids is not None and len(ids) != tensor.shape[-1]:
                raise RuntimeError(
                    f"Channel rule of {describe(op)} gave {len(ids)} "
                    f"channels for an output of {tensor.shape[-1]}."
                )
            graph.tensors[id(tensor)] = ids
    return [graph.tensors.get(id(t)) for t in functional.outputs]


class PassThrough(ChannelRule):
    """Acts on each channel alone and keeps the last axis: activations,
    dropout, pooling, padding, up-sampling, unary raw ops.

    `check(op, node)` may return a reason why a call does not (a softmax
    over the channels, channels_first data).
    """

    def __init__(self, check=None):
        self.check = check

    def trace(self, graph, node, op, ins):
        reason = self.check(op, node) if self.check else None
        if reason is None:
            reason = channels_first(op, node)
        tensors = keras_adapter.node_inputs(node)
        if reason is None and (
            not tensors
            or not node.outputs
            or tensors[0].shape[-1] != node.outputs[0].shape[-1]
        ):
            reason = "it changes the channel axis"
        if reason is not None:
            return block_call(graph, node, op, ins, reason)
        return [ins[0]] + [None] * (len(node.outputs) - 1)


def channels_first(op, node=None):
    fmt = getattr(op, "data_format", None)
    if fmt == "channels_first":
        return "channels_first data (only channels_last is followed)"
    return None


class Blocking(ChannelRule):
    """Keeps every channel it touches, for a stated reason."""

    def __init__(self, reason):
        self.reason = reason

    def trace(self, graph, node, op, ins):
        return block_call(graph, node, op, ins, self.reason)


def same_shape_ids(graph, node, ins):
    """Joins the channels of inputs that share the output's channel axis
    (broadcast inputs with one channel, or none, are left out)."""
    width = node.outputs[0].shape[-1]
    joined = None
    for tensor, ids in zip(keras_adapter.node_inputs(node), ins):
        if ids is None or tensor.shape[-1] != width:
            continue
        if joined is None:
            joined = ids
        else:
            graph.union(joined, ids)
    return joined
