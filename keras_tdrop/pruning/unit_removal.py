"""Removing chosen units of Dense/Conv layers: `remove_units`.

`remove_units` deletes output units (the last axis) of
Dense and Conv layers, slices every channel-wise layer between them and their
consumers (BatchNormalization, activations, pooling, dropout, padding, ...),
follows the channels through Flatten and through merges (Add, Multiply, ...)
whose branches all remove them, and deletes the consumers' input rows or
channels. It is the older per-layer engine, kept as public API;
`shrink` and `truncate` work on the channel dependency graph instead
(`keras_tdrop.channels`).
"""

import keras
import numpy as np
from keras import ops

from keras_tdrop import keras_adapter
from keras_tdrop.channels.table import CHANNEL_PASS_LAYERS

L = keras.layers
PRODUCERS = (L.Dense, L.Conv1D, L.Conv2D, L.Conv3D)
CHANNELWISE = (
    L.Activation,
    L.PReLU,
    L.BatchNormalization,
) + CHANNEL_PASS_LAYERS
MERGES = (L.Add, L.Subtract, L.Multiply, L.Average, L.Maximum, L.Minimum)
_MIXING_ACTIVATIONS = ("softmax", "log_softmax")


class _Refusal(Exception):
    """A removal that cannot be carried through `layer` exactly."""

    def __init__(self, layer, reason, provenance):
        super().__init__(reason)
        self.layer, self.reason, self.provenance = layer, reason, provenance


def _graph(model):
    """`(functional, [(layer, input tensors, output tensors)])` in order.

    Raises:
        keras_adapter.GraphError: (a ValueError) for a subclassed or
            unbuilt model.
    """
    functional = keras_adapter.functional_of(model)
    nodes = [
        (
            node.operation,
            keras_adapter.node_inputs(node),
            list(node.outputs),
        )
        for node in keras_adapter.nodes(functional)
    ]
    return functional, nodes


def _channels_last(layer):
    fmt = getattr(layer, "data_format", None)
    if fmt not in (None, "channels_last"):
        return False
    if isinstance(layer, L.BatchNormalization):
        return layer.axis in (-1, len(layer.input.shape) - 1)
    return True


def _mixes_channels(layer):
    activation = getattr(layer, "activation", None)
    name = getattr(activation, "__name__", str(activation))
    return name in _MIXING_ACTIVATIONS


def _is_producer(layer):
    return (
        isinstance(layer, PRODUCERS)
        and getattr(layer, "groups", 1) == 1
        and getattr(layer, "data_format", "channels_last") == "channels_last"
    )


def _check_keep(model, keep, drop_layers):
    if not isinstance(keep, dict):
        raise TypeError(
            "`keep` must be a dict {layer name: sorted unit indices}. "
            f"Received: keep={type(keep).__name__}"
        )
    layers = {layer.name: layer for layer in model.layers}
    checked = {}
    for name, units in keep.items():
        layer = layers.get(name)
        if layer is None:
            raise ValueError(
                f"`keep` names a layer the model does not have. "
                f"Received: {name!r}"
            )
        if not _is_producer(layer):
            raise ValueError(
                "`keep` may only name Dense and Conv1D/2D/3D layers "
                "(channels_last, groups=1). Received: "
                f"{name!r} ({type(layer).__name__})"
            )
        width = layer.kernel.shape[-1]
        array = np.asarray(units)
        if (
            array.ndim != 1
            or array.size == 0
            or not np.issubdtype(array.dtype, np.integer)
            or np.any(np.diff(array) <= 0)
            or array[0] < 0
            or array[-1] >= width
        ):
            raise ValueError(
                f"`keep[{name!r}]` must be a non-empty, sorted 1-D array of "
                f"distinct ints in [0, {width}). Received: {units!r}"
            )
        checked[name] = array.astype("int64")
    drop_layers = (
        (drop_layers,) if isinstance(drop_layers, str) else drop_layers
    )
    for name in drop_layers:
        layer = layers.get(name)
        if layer is None:
            raise ValueError(
                f"`drop_layers` names a layer the model does not have. "
                f"Received: {name!r}"
            )
        if tuple(layer.input.shape) != tuple(layer.output.shape):
            raise ValueError(
                f"`drop_layers` must name identity-at-inference layers "
                f"(output shape = input shape). Received: {name!r}"
            )
    return checked, set(drop_layers)


def _probe(functional, removed):
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
        if _is_producer(op):
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


def _propagate(functional, nodes, removed, drop, fold, probe, strict):
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
        elif _is_producer(layer) and state is not None:
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
            if units and _mixes_channels(layer):
                refuse(layer, "its activation mixes units", fresh)
            elif units:
                states[id(outputs[0])] = fresh
        elif isinstance(layer, CHANNELWISE) and state is not None:
            if (
                not _channels_last(layer)
                or _mixes_channels(layer)
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


def _new_layer(layer, out_removed, delta):
    config = layer.get_config()
    if out_removed:
        key = "units" if isinstance(layer, L.Dense) else "filters"
        config[key] -= len(out_removed)
    if delta is not None and np.any(delta) and not layer.use_bias:
        config["use_bias"] = True
    return layer.__class__.from_config(config)


def _set_weights(old, new, out_removed, in_removed, delta):
    if _is_producer(old):
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


def _rebuild(model, functional, nodes, removed, drop, states, folds):
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

    inputs = [
        keras.Input(
            batch_shape=t.shape,
            dtype=t.dtype,
            name=keras_adapter.producer(t).name,
        )
        for t in functional.inputs
    ]
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


def remove_units(
    model, keep, drop_layers=(), strict=False, fold_constants=False
):
    """Removes output units of Dense/Conv layers, and what they feed.

    A removed unit's channel is deleted from every tensor it flows through:
    the producer's kernel and bias columns, the parameters of the
    channel-wise layers after it (BatchNormalization, PReLU; activations,
    pooling, padding, dropout pass it through), the features it becomes
    after a Flatten, merges (Add, Multiply, ...) whose branches all remove
    it, and the input rows or channels of the Dense/Conv layers that
    consume it. Consumers therefore see a removed channel as zero, unless
    `fold_constants=True`: then a removed unit is taken to output its
    constant `activation(bias)` (the output of a unit whose kernel is zero,
    as after masking), and that constant's contribution is added to each
    consumer's bias, so removing units with zero kernels leaves the function
    unchanged. Where a removal cannot be carried through exactly (a layer
    that mixes channels such as Reshape, Concatenate or LayerNormalization, a
    merge whose branches keep different channels, a model output, a layer
    called twice, a constant that a 'same'-padded convolution would see
    unevenly), those units are kept and the reason is reported, or, with
    `strict=True`, a ValueError names the layer.

    Args:
        model: a built Sequential or functional `keras.Model` (not modified).
        keep: `{layer name: sorted 1-D int array}`, the output units (last
            axis) to keep of Dense and Conv1D/2D/3D layers.
        drop_layers: names of identity-at-inference layers to take out of
            the graph (their output is replaced by their input).
        strict: bool, raise instead of keeping units.
        fold_constants: bool, carry removed units' constant outputs into the
            consumers' biases.

    Returns:
        `(new_model, rows)`: a plain functional model with fresh layers of
        the same names, and one row per layer in `keep` with `layer`,
        `units`, `kept`, `removed`, `refused` (units asked to go but kept)
        and `reason`.

    Example:
    >>> small, rows = remove_units(model, {"fc1": np.arange(64)})
    """
    if not isinstance(model, keras.Model):
        raise TypeError(
            f"`model` must be a keras.Model. Received: model={model!r}"
        )
    keep, drop = _check_keep(model, keep, drop_layers)
    functional, nodes = _graph(model)
    widths = {n: model.get_layer(n).kernel.shape[-1] for n in keep}
    removed = {n: set(range(widths[n])) - set(keep[n].tolist()) for n in keep}
    requested = {n: len(units) for n, units in removed.items()}
    probe = _probe(functional, removed) if fold_constants else None
    reasons = {n: [] for n in keep}
    while True:
        states, folds, refusals = _propagate(
            functional, nodes, removed, drop, fold_constants, probe, strict
        )
        restored = False
        for layer, reason, sources in refusals:
            for name, unit in sources:
                if unit in removed[name]:
                    removed[name].discard(unit)
                    restored = True
                    note = f"{layer.name}: {reason}"
                    if note not in reasons[name]:
                        reasons[name].append(note)
        if not refusals:
            break
        if not restored:
            raise RuntimeError(
                f"remove_units could not settle: {refusals[0][1]} at "
                f"'{refusals[0][0].name}'."
            )
    new_model = _rebuild(model, functional, nodes, removed, drop, states, folds)
    rows = [
        {
            "layer": name,
            "units": widths[name],
            "kept": widths[name] - len(removed[name]),
            "removed": len(removed[name]),
            "refused": requested[name] - len(removed[name]),
            "reason": "; ".join(reasons[name]),
        }
        for name in keep
    ]
    return new_model, rows
