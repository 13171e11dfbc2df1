"""Carrying removed units through the layers that consume them.

For `remove_units`: which layers pass a unit's channel on alone (channel-wise
layers, Flatten, merges whose branches all remove it), which refuse it, and,
with `fold_constants`, what a removed unit's constant output adds to each
consumer's bias.
"""

import keras
import numpy as np
from keras import ops

from keras_tdrop import keras_adapter
from keras_tdrop.channels.layer_rules import mixing_activation
from keras_tdrop.channels.table import CHANNEL_PASS_LAYERS

__all__ = [
    "CHANNELWISE",
    "MERGES",
    "PRODUCERS",
    "is_producer",
    "probe_inputs",
    "propagate_removal",
]

L = keras.layers
PRODUCERS = (L.Dense, L.Conv1D, L.Conv2D, L.Conv3D)
CHANNELWISE = (
    L.Activation,
    L.PReLU,
    L.BatchNormalization,
) + CHANNEL_PASS_LAYERS
MERGES = (L.Add, L.Subtract, L.Multiply, L.Average, L.Maximum, L.Minimum)


class _Refusal(Exception):
    """A removal that cannot be carried through `layer` exactly."""

    def __init__(self, layer, reason, provenance):
        super().__init__(reason)
        self.layer, self.reason, self.provenance = layer, reason, provenance


def _channels_last(layer):
    fmt = getattr(layer, "data_format", None)
    if fmt not in (None, "channels_last"):
        return False
    if isinstance(layer, L.BatchNormalization):
        return layer.axis in (-1, len(layer.input.shape) - 1)
    return True


def is_producer(layer):
    """Whether `remove_units` can remove output units of `layer`: a Dense
    or Conv1D/2D/3D layer, channels_last, with `groups=1`."""
    return (
        isinstance(layer, PRODUCERS)
        and getattr(layer, "groups", 1) == 1
        and getattr(layer, "data_format", "channels_last") == "channels_last"
    )


def probe_inputs(functional, removed):
    """The input of every Dense/Conv layer on a zero input, with the removed
    units replaced by what a zero-kernel unit outputs, activation(bias).

    Removed channels never mix with kept ones, so their values downstream
    do not depend on the input. None when an input shape is not known.
    """
    shapes = [tuple(t.shape) for t in functional.inputs]
    if any(d is None for shape in shapes for d in shape[1:]):
        return None
    inputs = [
        np.zeros((1,) + shape[1:], t.dtype)
        for shape, t in zip(shapes, functional.inputs)
    ]
    seen = {}

    def call(node, args, kwargs):
        op = node.operation
        if is_producer(op):
            seen[op.name] = ops.convert_to_numpy(args[0])
        out = op(*args, **kwargs)
        units = removed.get(op.name)
        if units:
            width = op.kernel.shape[-1]
            bias = op.bias if op.use_bias else ops.zeros((width,))
            constant = op.activation(ops.cast(bias, out.dtype))
            chosen = np.zeros(width, bool)
            chosen[sorted(units)] = True
            out = ops.where(chosen, constant, out)
        return out

    keras_adapter.run_graph(functional, inputs, call)
    return seen


def _fold(layer, probe, rows):
    """`(bias change, rows that cannot be folded)` for removed input rows
    whose values `probe` holds."""
    kernel = ops.convert_to_numpy(layer.kernel).astype("float64")
    flat = probe[..., rows].astype("float64").reshape(-1, len(rows))
    spatial = kernel.ndim > 2
    # Padding reaches the output only through kernels wider than one.
    padded = (
        spatial
        and getattr(layer, "padding", "valid") != "valid"
        and any(k > 1 for k in kernel.shape[:-2])
    )
    delta = np.zeros(kernel.shape[-1])
    refused = []
    for i, row in enumerate(rows):
        column = flat[:, i]
        if not np.all(np.isfinite(column)):
            refused.append(row)
        elif not np.any(column):
            continue
        elif padded or np.any(column != column[0]):
            refused.append(row)
        else:
            weights = kernel[..., row, :].reshape(-1, kernel.shape[-1])
            delta += column[0] * weights.sum(axis=0)
    return delta, refused


def _union(states):
    merged = {}
    for state in states:
        for index, source in state.items():
            merged.setdefault(index, set()).update(source)
    return merged


def propagate_removal(functional, nodes, removed, drop, fold, probe, strict):
    """Carries the removed units to their consumers.

    Returns `(states, folds, refusals)`: per tensor id `{index: set of
    (producer, unit)}` along its last axis, per consumer its bias change,
    and `(layer, reason, {(producer, unit)})` for each removal refused.
    """
    counts = {}
    for layer, _, _ in nodes:
        counts[id(layer)] = counts.get(id(layer), 0) + 1
    states, folds, refusals = {}, {}, []

    def refuse(layer, reason, state):
        if strict:
            raise ValueError(
                f"Cannot remove units through layer '{layer.name}' "
                f"({type(layer).__name__}): {reason}."
            )
        refusals.append((layer, reason, set().union(*state.values())))

    for layer, inputs, outputs in nodes:
        in_states = [states.get(id(t), {}) for t in inputs]
        units = removed.get(layer.name, set())
        fresh = {u: {(layer.name, u)} for u in units}
        if not any(in_states) and not units:
            continue
        if counts[id(layer)] > 1:
            refuse(layer, "it is called more than once", _union(in_states))
            if units:
                refuse(layer, "it is called more than once", fresh)
            continue
        state = in_states[0] if len(in_states) == 1 else None
        if layer.name in drop:
            states[id(outputs[0])] = state
        elif is_producer(layer) and state is not None:
            if state and fold:
                if probe is None:
                    refuse(layer, "the model's input shape is not known", state)
                else:
                    rows = sorted(state)
                    delta, bad = _fold(layer, probe[layer.name], rows)
                    folds[layer.name] = delta
                    if bad:
                        refuse(
                            layer,
                            "the removed units' constant output varies over "
                            "the positions it reads",
                            {i: state[i] for i in bad},
                        )
            if units and mixing_activation(layer):
                refuse(layer, "its activation mixes units", fresh)
            elif units:
                states[id(outputs[0])] = fresh
        elif isinstance(layer, CHANNELWISE) and state is not None:
            if (
                not _channels_last(layer)
                or mixing_activation(layer)
                or outputs[0].shape[-1] != inputs[0].shape[-1]
            ):
                refuse(layer, "it does not act on each channel alone", state)
            else:
                states[id(outputs[0])] = state
        elif isinstance(layer, L.Flatten) and state is not None:
            shape = inputs[0].shape[1:]
            if not _channels_last(layer) or None in shape:
                refuse(layer, "the flattened layout is not known", state)
                continue
            width = shape[-1]
            positions = int(np.prod(shape[:-1], dtype="int64"))
            states[id(outputs[0])] = {
                p * width + c: source
                for p in range(positions)
                for c, source in state.items()
            }
        elif isinstance(layer, MERGES):
            if len({tuple(t.shape[1:]) for t in inputs}) != 1:
                refuse(
                    layer, "its inputs have different shapes", _union(in_states)
                )
                continue
            merged = _union(in_states)
            common = set.intersection(*(set(s) for s in in_states))
            partial = {i: s for i, s in merged.items() if i not in common}
            if partial:
                refuse(layer, "its branches keep different channels", partial)
            if common:
                states[id(outputs[0])] = {i: merged[i] for i in common}
        else:
            refuse(layer, "it cannot be sliced", _union(in_states))
    for tensor in functional.outputs:
        if states.get(id(tensor)):
            refuse(
                keras_adapter.producer(tensor),
                "its output is a model output",
                states[id(tensor)],
            )
    return states, folds, refusals
