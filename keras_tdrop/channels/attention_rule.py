"""The channel rule of MultiHeadAttention: whole heads, and its inputs' and
output's channels."""

import numpy as np

from keras_tdrop import keras_adapter
from keras_tdrop.channels.rules import ChannelRule
from keras_tdrop.channels.rules import block_call

__all__ = [
    "MultiHeadAttention",
    "attention_weights",
]

_PARTS = ("query", "key", "value", "attention_output")


def attention_weights(layer):
    """`{part: (kernel, bias or None)}` of a MultiHeadAttention layer, read
    from the variables' paths (`.../query/kernel`, ...)."""
    found = {}
    for variable in layer.weights:
        part, name = variable.path.split("/")[-2:]
        if part in _PARTS:
            kernel, bias = found.get(part, (None, None))
            if name == "kernel":
                kernel = variable
            elif name == "bias":
                bias = variable
            found[part] = (kernel, bias)
    return found


class MultiHeadAttention(ChannelRule):
    """Heads are units (a head's query, key and value kernels and biases and
    its rows of the output kernel go together; `num_heads` shrinks). The
    query, key and value inputs are read by their kernels' rows. Without
    `output_shape`, the output has the query's channels, written by the
    output kernel's columns."""

    def _inputs(self, node):
        args, kwargs = node.arguments.args, node.arguments.kwargs
        names = ("query", "value", "key")
        given = {n: a for n, a in zip(names, args)}
        given.update({n: kwargs[n] for n in names if n in kwargs})
        given.setdefault("key", given.get("value"))
        return given

    def trace(self, graph, node, layer, ins):
        parts = attention_weights(layer)
        if set(parts) != set(_PARTS) or len(layer.weights) > 8:
            return block_call(graph, node, layer, ins, "unknown weights")
        if node.arguments.kwargs.get("return_attention_scores"):
            return block_call(
                graph, node, layer, ins, "it returns attention scores"
            )
        ids_of = {
            id(t): ids for t, ids in zip(keras_adapter.node_inputs(node), ins)
        }
        given = self._inputs(node)
        heads = graph.fresh(layer.num_heads)
        for part in ("query", "key", "value"):
            kernel, bias = parts[part]
            heads = graph.bind(layer, kernel, 1, heads, "member")
            if bias is not None:
                graph.bind(layer, bias, 0, heads, "param")
            ids = ids_of.get(id(given.get(part)))
            if ids is not None:
                graph.bind(layer, kernel, 0, ids, "in")
        kernel, bias = parts["attention_output"]
        # A head's rows of the output kernel: when they are zero, the head
        # adds nothing.
        graph.bind(layer, kernel, 0, heads, "out")
        query_ids = ids_of.get(id(given["query"]))
        if layer.get_config()["output_shape"] is None and query_ids is not None:
            out = graph.bind(layer, kernel, -1, query_ids, "out")
        else:
            out = graph.output_ids(layer, kernel, -1)
        if bias is not None:
            graph.bind(layer, bias, 0, out, "param")
        return [out]

    def configure(self, layer, node, config, weights, args, kwargs):
        parts = attention_weights(layer)
        index = [v.path for v in layer.weights].index(parts["query"][0].path)
        config["num_heads"] = weights[index].shape[1]
        if config.get("output_shape") is not None:
            shape = list(np.atleast_1d(config["output_shape"]))
            paths = [v.path for v in layer.weights]
            out = paths.index(parts["attention_output"][0].path)
            shape[-1] = weights[out].shape[-1]
            config["output_shape"] = tuple(int(d) for d in shape)
        return config
