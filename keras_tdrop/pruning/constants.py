"""Folding removed channels' constant values into their consumers' biases."""

import keras
import numpy as np
from keras import ops

from keras_tdrop import keras_adapter

__all__ = [
    "fold_constants",
]

L = keras.layers
_FOLDABLE = (
    L.Dense,
    L.Conv1D,
    L.Conv2D,
    L.Conv3D,
    L.Conv1DTranspose,
    L.Conv2DTranspose,
    L.Conv3DTranspose,
    L.SeparableConv1D,
    L.SeparableConv2D,
    L.EinsumDense,
)


def _linear_copy(layer, shape):
    """`layer` without bias and activation: its linear part."""
    config = layer.get_config()
    config["activation"] = None
    if "use_bias" in config:
        config["use_bias"] = False
    if isinstance(layer, L.EinsumDense):
        config["bias_axes"] = None
    copy = layer.__class__.from_config(config)
    copy.build(shape)
    bias = getattr(layer, "bias", None)
    kernels = [w for w in layer.weights if w is not bias]
    for new, old in zip(copy.weights, kernels):
        new.assign(old)
    return copy


def _probe(masked, layers):
    """The input of each call of `layers` on a zero input batch of one."""
    seen = {}

    def call(node, args, kwargs):
        op = node.operation
        if keras_adapter.is_graph_model(op):
            return keras_adapter.run_graph(op, keras.tree.flatten(args), call)
        if id(op) in layers:
            seen.setdefault(id(op), []).append(ops.convert_to_numpy(args[0]))
        return op(*args, **kwargs)

    inputs = []
    for tensor in keras_adapter.functional_of(masked).inputs:
        shape = [1] + [8 if d is None else d for d in tensor.shape[1:]]
        inputs.append(np.zeros(shape, tensor.dtype))
    keras_adapter.run_graph(masked, inputs, call)
    return seen


def _contribution(copy, x, positions):
    selected = np.zeros_like(x)
    selected[..., positions] = x[..., positions]
    out = ops.convert_to_numpy(copy(selected))
    return out.reshape(-1, out.shape[-1]).astype("float64")


def _uniform(flat):
    return np.allclose(flat, flat[0], rtol=1e-5, atol=1e-6)


def fold_constants(graph, masked, removable, approximate=False):
    """Bias changes that keep the function when `removable` channels go.

    A removed channel is constant; a consumer that reads it with non-zero
    rows gets the constant's contribution in its bias. Returns `(deltas,
    refused, approximated)`: `{id(layer): bias change over its old
    outputs}`, `{root: reason}` for channels that cannot be folded exactly
    (a padded convolution sees the constant unevenly, a layer with no
    bias to fold into), and the roots folded approximately (their mean
    contribution) with `approximate=True`.
    """
    readers = {}
    cache = {}
    going = graph.flags(removable)
    for piece in graph.slices.values():
        if piece.role != "in":
            continue
        roots = graph.roots(piece.ids)
        hit = np.flatnonzero(going[roots])
        if not len(hit):
            continue
        key = id(piece.variable)
        if key not in cache:
            cache[key] = ops.convert_to_numpy(piece.variable)
        rows = np.take(cache[key], hit, axis=piece.axis)
        axes = tuple(a for a in range(rows.ndim) if a != piece.axis)
        live = hit[np.any(rows != 0, axis=axes)]
        if len(live):
            entry = readers.setdefault(id(piece.layer), (piece.layer, {}))
            for position in live.tolist():
                entry[1][position] = int(roots[position])
    deltas, refused, approximated = {}, {}, set()
    foldable = {k: v for k, v in readers.items() if isinstance(v[0], _FOLDABLE)}
    for layer, channels in (v for k, v in readers.items() if k not in foldable):
        for root in channels.values():
            refused[root] = (
                f"'{layer.name}' ({type(layer).__name__}) reads the removed "
                "channel with non-zero weights and cannot absorb its constant"
            )
    if not foldable:
        return deltas, refused, approximated
    probes = _probe(masked, foldable)
    for key, (layer, channels) in foldable.items():
        calls = probes.get(key, [])
        x = calls[0]
        copy = _linear_copy(layer, x.shape)
        positions = sorted(channels)
        flat = _contribution(copy, x, positions)
        if _uniform(flat) and all(
            np.allclose(_contribution(copy, c, positions), flat)
            for c in calls[1:]
        ):
            deltas[key] = flat[0]
            continue
        total = np.zeros(flat.shape[-1])
        for position in positions:
            root = channels[position]
            alone = _contribution(copy, x, [position])
            if _uniform(alone) and len(calls) == 1:
                total += alone[0]
            elif approximate and len(calls) == 1:
                total += alone.mean(axis=0)
                approximated.add(root)
            else:
                refused[root] = (
                    f"'{layer.name}' ({type(layer).__name__}) sees the "
                    "removed channel's constant unevenly (padding); pass "
                    "approximate=True to remove it anyway"
                )
        deltas[key] = total
    return deltas, refused, approximated
