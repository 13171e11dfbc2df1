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

import numpy as np

from keras_tdrop import keras_adapter
from keras_tdrop.kernels import check_model
from keras_tdrop.pruning.unit_propagation import CHANNELWISE
from keras_tdrop.pruning.unit_propagation import MERGES
from keras_tdrop.pruning.unit_propagation import PRODUCERS
from keras_tdrop.pruning.unit_propagation import is_producer
from keras_tdrop.pruning.unit_propagation import probe_inputs
from keras_tdrop.pruning.unit_propagation import propagate_removal
from keras_tdrop.pruning.unit_rebuild import rebuild_without_units

__all__ = ["CHANNELWISE", "MERGES", "PRODUCERS", "remove_units"]


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
        if not is_producer(layer):
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
    check_model(model)
    keep, drop = _check_keep(model, keep, drop_layers)
    functional, nodes = _graph(model)
    widths = {n: model.get_layer(n).kernel.shape[-1] for n in keep}
    removed = {n: set(range(widths[n])) - set(keep[n].tolist()) for n in keep}
    requested = {n: len(units) for n, units in removed.items()}
    probe = probe_inputs(functional, removed) if fold_constants else None
    reasons = {n: [] for n in keep}
    while True:
        states, folds, refusals = propagate_removal(
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
    new_model = rebuild_without_units(
        model, functional, nodes, removed, drop, states, folds
    )
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
