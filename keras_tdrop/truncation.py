"""Truncating Triangular Dropout models to a narrower, ordinary model."""

import numbers

import numpy as np

from keras_tdrop import keras_adapter as adapter
from keras_tdrop.channels import ChannelGraph
from keras_tdrop.channels import ChannelRule
from keras_tdrop.channels import channel_graph
from keras_tdrop.channels import rebuild
from keras_tdrop.channels import register_channel_rule
from keras_tdrop.channels.rules import block_call
from keras_tdrop.kernels import check_model
from keras_tdrop.layers.model_ordered_dropout import ModelOrderedDropout
from keras_tdrop.layers.triangular_dropout import TriangularDropout
from keras_tdrop.layers.triangular_dropout import triangular_dropout_layers
from keras_tdrop.pruning.group_masks import masks_for
from keras_tdrop.pruning.ordered_masks import group_writers
from keras_tdrop.pruning.ordered_masks import ordered_roots
from keras_tdrop.pruning.shrink import shrink

__all__ = [
    "recalibration_batches",
    "truncate",
]


class _WidthCut(ChannelRule):
    """TriangularDropout in the channel graph: per-channel. In truncation
    (a graph with `cuts`) it is also a cut: its output channels get ids of
    their own, so that the units it zeroes beyond a width are told apart
    from the same units before it."""

    def trace(self, graph, node, layer, ins):
        if ins[0] is None:
            return block_call(graph, node, layer, ins, "a model input")
        cuts = getattr(graph, "cuts", None)
        if cuts is None:
            # Outside truncation (shrink, group masks) it acts on each
            # channel alone: its channels pass through.
            return [ins[0]]
        out = graph.fresh(len(ins[0]))
        cuts[id(layer)] = (layer, ins[0], out)
        return [out]


register_channel_rule(TriangularDropout, _WidthCut())


def _plan(graph, layer, width):
    """The roots truncation removes at `layer` (a TriangularDropout), or a
    ValueError naming what stands in the way."""
    _, before, after = graph.cuts[id(layer)]
    pre = set(graph.roots(before[width:]).tolist())
    post = set(graph.roots(after[width:]).tolist())
    blocked = graph.blocked_reasons()
    pieces = graph.root_slices()
    source = group_writers(graph, pre)
    origin = f" (from {', '.join(map(repr, source))})" if source else ""
    where = (
        f"Cannot truncate at TriangularDropout layer '{layer.name}': its "
        f"units beyond width {width}{origin}"
    )
    for root in sorted(pre | post):
        if root in blocked:
            raise ValueError(f"{where}: {blocked[root][0]}.")
    for root in sorted(pre):
        readers = {
            p.layer.name
            for p, _ in pieces.get(root, [])
            if p.role in ("in", "member")
        }
        if readers:
            raise ValueError(
                f"{where} are also read by {sorted(readers)} without "
                "passing through it."
            )
    for root in sorted(post):
        writers = group_writers(graph, [root])
        if writers:
            raise ValueError(
                f"{where} are joined with channels written by {writers}."
            )
    return pre | post


def _widths(layers, width):
    if isinstance(width, dict):
        names = {layer.name for layer in layers}
        unknown = sorted(set(width) - names)
        if unknown:
            raise ValueError(
                "`width` names layers that are not TriangularDropout layers "
                f"of the model: {unknown}; they are {sorted(names)}. "
                f"Received: width={width!r}"
            )
        chosen = {layer.name: layer.width for layer in layers}
        chosen.update(width)
    else:
        chosen = {layer.name: width for layer in layers}
    widths = {}
    for layer in layers:
        w = chosen[layer.name]
        if w is None:
            w = layer.width
        if w is None:
            w = layer.units
        if (
            isinstance(w, bool)
            or not isinstance(w, (int, np.integer))
            or not 1 <= w <= layer.units
        ):
            raise ValueError(
                f"`width` for layer '{layer.name}' must be an int in "
                f"[1, {layer.units}]. Received: width={w!r}"
            )
        widths[layer.name] = int(w)
    return widths


def recalibration_batches(model, recalibrate):
    """`read_batches` of `recalibrate` checked against `model`'s inputs,
    or a ValueError naming `recalibrate`."""
    from keras_tdrop.pruning.recalibrate import check_batches
    from keras_tdrop.pruning.recalibrate import read_batches

    try:
        batches = read_batches(recalibrate)
        check_batches(model, batches)
    except ValueError as error:
        raise ValueError(f"`recalibrate`: {error}") from None
    return batches


def truncate(
    model,
    width=None,
    recalibrate=None,
    round_to=1,
    exclude=None,
    exclude_logits=True,
):
    """A plain, narrower copy of a model trained with Triangular Dropout.

    Two kinds of model are truncated. A model with `TriangularDropout`
    layers is cut at each of them (below). A graph model trained with
    ordered channel dropout (`ModelOrderedDropout`, or the wrapper itself)
    is cut through its channel groups: at a fraction `width`, every group
    keeps its first `kept_channels(n, width, round_to)` channels in every
    member and loses the others (`ordered_masks`), and `shrink` removes
    them, so the result computes what the model computes with those
    channels masked.

    For every `TriangularDropout` layer with width w, the Dense or Conv
    layer producing its input keeps only its first w units (`W[..., :w]`,
    `b[:w]`), the element-wise layers in between (BatchNormalization,
    activations) are sliced along, the consuming layer keeps only the
    matching input rows or channels (`W_next[:w, :]`), and the
    `TriangularDropout` layer itself is removed. The result is an ordinary
    Keras model whose outputs equal `model`'s outputs after
    `set_width(model, width)`, with exactly the parameters of an
    architecture built at width w. `model` is not modified.

    The units are followed through the channel dependency graph
    (`keras_tdrop.channels`), so the producer may sit behind channel-wise
    layers, residual sums or concatenations; a structure where removing
    them cannot be exact (a reshape that moves the channels, a layer that
    reads the producer's units without passing through the
    TriangularDropout layer, a model output, a normalization over the
    channels) raises a `ValueError` naming the layer, instead of returning
    a different function.

    With `recalibrate`, the truncated model's BatchNormalization
    statistics are then re-estimated on that data (as slimmable networks
    recalibrate each width; see `recalibrate_batchnorm`), so the outputs
    are no longer those of `set_width` but those of the narrow network
    normalized by its own statistics.

    Args:
        model: a functional or Sequential Keras model with
            `TriangularDropout` layers (at its top level), or one trained
            with ordered channel dropout.
        width: with `TriangularDropout` layers, an int (the same width
            for every layer), a dict `{layer name: int}` for some layers,
            or None; layers not given a width keep the one set on them
            (`layer.width`), else all their units. Through the channel
            groups, a fraction in (0, 1], or a dict `{layer name:
            fraction or channel count}` naming a layer that writes the
            group (other groups stay whole).
        recalibrate: optional data, what `recalibrate_batchnorm` takes
            (arrays, an `(x, y)` tuple, a `tf.data.Dataset` of a few
            batches, ...); checked before anything is cut.
        round_to, exclude, exclude_logits: for channel groups, as in
            `ordered_masks` (use those the model was trained with).

    Returns:
        A new `keras.Model` without `TriangularDropout` layers (with a
        warning when `recalibrate` is given and it has no
        BatchNormalization layer).

    Example:
    >>> keras_tdrop.set_width(model, 8)
    >>> small = keras_tdrop.truncate(model, 8)  # same outputs, fewer params
    """
    if isinstance(model, ModelOrderedDropout):
        model = model.model
    check_model(model)
    layers = [
        layer for layer in model.layers if isinstance(layer, TriangularDropout)
    ]
    nested = [
        layer.name
        for layer in triangular_dropout_layers(model)
        if layer not in layers
    ]
    if nested:
        raise ValueError(
            f"Cannot truncate model '{model.name}': TriangularDropout layers "
            f"{nested} sit inside nested models; truncate the nested model "
            "or flatten it first."
        )
    if not layers:
        return _truncate_groups(
            model, width, recalibrate, round_to, exclude, exclude_logits
        )
    if round_to != 1 or exclude is not None or exclude_logits is not True:
        raise ValueError(
            "`round_to`, `exclude` and `exclude_logits` apply to truncation "
            f"through channel groups; model '{model.name}' is truncated at "
            "its TriangularDropout layers. Received: "
            f"round_to={round_to!r}, exclude={exclude!r}, "
            f"exclude_logits={exclude_logits!r}"
        )
    widths = _widths(layers, width)
    batches = None
    if recalibrate is not None:
        batches = recalibration_batches(model, recalibrate)
    graph = ChannelGraph(model)
    graph.cuts = {}
    graph = channel_graph(model, graph=graph)
    removed = set()
    for layer in layers:
        removed |= _plan(graph, layer, widths[layer.name])
    new_model = rebuild(graph, removed, drop={id(layer) for layer in layers})
    if batches is not None:
        from keras_tdrop.pruning.recalibrate import recalibrate_batchnorm

        new_model = recalibrate_batchnorm(new_model, batches, inplace=True)
    return new_model


def _truncate_groups(
    model, width, recalibrate, round_to, exclude, exclude_logits
):
    """`truncate` through the channel groups (no TriangularDropout)."""
    if width is None or (
        isinstance(width, numbers.Integral) and not isinstance(width, bool)
    ):
        raise ValueError(
            f"Model '{model.name}' has no TriangularDropout layer, so it is "
            "truncated through its channel groups, which takes a fraction "
            "in (0, 1] (or a dict {layer name: fraction or count}). "
            f"Received: width={width!r}"
        )
    try:
        adapter.functional_of(model)
    except adapter.GraphError as error:
        raise ValueError(
            f"Cannot truncate model '{model.name}' through its channel "
            "groups: that needs a functional or Sequential model (a "
            "subclassed model can be truncated at TriangularDropout layers "
            f"in a graph model instead). {error}"
        ) from None
    graph = channel_graph(model)
    removed = ordered_roots(
        graph, model, width, round_to, exclude, exclude_logits
    )
    batches = None
    if recalibrate is not None:
        batches = recalibration_batches(model, recalibrate)
    small, _ = shrink(model, masks_for(graph, removed))
    if batches is not None:
        from keras_tdrop.pruning.recalibrate import recalibrate_batchnorm

        small = recalibrate_batchnorm(small, batches, inplace=True)
    return small
