"""Unit masks that respect the channel dependency graph's groups."""

import numpy as np
from keras import ops

from keras_tdrop.channels import channel_graph
from keras_tdrop.channels.groups import is_kernel_slice
from keras_tdrop.channels.groups import prunable_groups
from keras_tdrop.pruning.mask_options import SCOPES
from keras_tdrop.targeting import check_rate

__all__ = [
    "IMPORTANCES",
    "bn_scale_importance",
    "channel_importance",
    "check_importance",
    "choose_channels",
    "group_masks",
    "masks_for",
]

_EPS = 1.0 + 2.0**-20

# How a channel's importance is measured (the `importance` argument of
# `compute_masks(..., groups=True)`, `group_masks` and `choose_channels`).
IMPORTANCES = ("magnitude", "bn_scale")


def _arrays(graph):
    cache = {}

    def value(piece):
        key = id(piece.variable)
        if key not in cache:
            cache[key] = ops.convert_to_numpy(piece.variable).astype("float64")
        return cache[key]

    return value


def channel_importance(graph):
    """`{root: importance}`: the summed L2 norms of every kernel slice of
    the channel (producer columns, consumer rows, depthwise and attention
    slices), Torch-Pruning's group magnitude."""
    value = _arrays(graph)
    scores = {}
    for root, pieces in graph.root_slices().items():
        total = 0.0
        for piece, positions in pieces:
            if piece.role != "param" and is_kernel_slice(piece):
                taken = np.take(value(piece), positions, axis=piece.axis)
                total += float(np.sqrt(np.sum(taken**2)))
        scores[root] = total
    return scores


def _gammas(graph):
    """The slices of normalization scales (a BatchNormalization's
    `gamma`): trainable per-channel parameters named `gamma`."""
    return [
        piece
        for piece in graph.slices.values()
        if piece.role == "param"
        and piece.variable.trainable
        and piece.variable.name == "gamma"
    ]


def bn_scale_importance(graph):
    """`{root: importance}`: the summed |gamma| of every normalization
    layer holding the channel (Network Slimming's criterion, Liu et al.
    2017; Torch-Pruning's `BNScaleImportance`). A channel of a group with
    no normalization scale (a squeeze-excite's reduction) gets its
    `channel_importance` (magnitude) instead, so every group can still be
    pruned and all methods keep the same channel counts."""
    pieces = _gammas(graph)
    magnitude = channel_importance(graph)
    totals, found = {}, set()
    for piece in pieces:
        values = np.abs(ops.convert_to_numpy(piece.variable)).astype("float64")
        values = np.moveaxis(values, piece.axis, 0).reshape(len(piece.ids), -1)
        for root, value in zip(graph.roots(piece.ids).tolist(), values):
            totals[root] = totals.get(root, 0.0) + float(value.sum())
            found.add(root)
    return {r: totals[r] if r in found else magnitude[r] for r in magnitude}


def check_importance(importance):
    """`importance`, checked against `IMPORTANCES`."""
    if importance not in IMPORTANCES:
        raise ValueError(
            f"`importance` must be one of {IMPORTANCES}. "
            f"Received: importance={importance!r}"
        )
    return importance


def importance_scores(graph, model, importance):
    """`{root: importance}` by the named criterion (see `IMPORTANCES`)."""
    check_importance(importance)
    if importance == "magnitude":
        return channel_importance(graph)
    if not _gammas(graph):
        raise ValueError(
            "`importance='bn_scale'` ranks channels by their "
            "BatchNormalization scales (gamma), and model "
            f"'{model.name}' has no normalization layer with a scale on a "
            "prunable channel. Use importance='magnitude'. Received: "
            "importance='bn_scale'"
        )
    return bn_scale_importance(graph)


def _lowest(roots, scores, count):
    order = sorted(range(len(roots)), key=lambda i: (scores[roots[i]], i))
    return [roots[i] for i in order[:count]]


def choose_channels(
    graph,
    model,
    fraction,
    scope="local",
    exclude=None,
    exclude_logits=True,
    round_to=None,
    keep_stem=True,
    importance="magnitude",
):
    """The roots group pruning removes at `fraction` (see `group_masks`)."""
    scores = importance_scores(graph, model, importance)
    groups = prunable_groups(graph, model, exclude, exclude_logits, keep_stem)
    chosen = {}
    if scope == "local":
        for space, roots in groups.items():
            count = min(
                int(np.floor(fraction * len(roots) * _EPS)), len(roots) - 1
            )
            chosen[space] = _lowest(roots, scores, count)
    else:
        candidates = []
        for space, roots in groups.items():
            mean = np.mean([scores[r] for r in roots])
            for r in roots:
                normal = scores[r] / mean if mean > 0 else 0.0
                candidates.append((normal, len(candidates), r, space))
        total = int(np.floor(fraction * len(candidates) * _EPS))
        left = {space: len(roots) for space, roots in groups.items()}
        for _, _, root, space in sorted(candidates):
            if total == 0:
                break
            if left[space] > 1:
                chosen.setdefault(space, []).append(root)
                left[space] -= 1
                total -= 1
    removed = set()
    for space, roots in chosen.items():
        if round_to:
            # Keep a multiple of round_to (or the whole group): the least
            # important of the chosen go, the rest stay.
            n = len(groups[space])
            kept = n - len(roots)
            kept = min(n, -(-kept // round_to) * round_to)
            roots = roots[: n - kept]
        removed.update(roots)
    return removed


def masks_for(graph, removed):
    """`{kernel path: 0/1 mask}` zeroing every kernel slice of `removed`."""
    masks = {}
    removed = list(removed)
    for piece in graph.slices.values():
        if piece.role == "param" or not is_kernel_slice(piece):
            continue
        positions = np.flatnonzero(np.isin(graph.roots(piece.ids), removed))
        if not len(positions):
            continue
        variable = piece.variable
        mask = masks.get(variable.path)
        if mask is None:
            mask = np.ones(tuple(variable.shape), dtype=variable.dtype)
        index = [slice(None)] * mask.ndim
        index[piece.axis] = positions
        mask[tuple(index)] = 0
        masks[variable.path] = mask
    return masks


def group_masks(
    model,
    fraction,
    scope="local",
    exclude=None,
    exclude_logits=True,
    round_to=None,
    keep_stem=True,
    importance="magnitude",
):
    """Unit masks over the channel dependency graph's groups.

    Every group of coupled layers (the convolutions feeding one residual
    `Add`, a convolution with its BatchNormalization, depthwise
    convolution and squeeze-excite gate, the heads of a MultiHeadAttention)
    loses the same channels in all its members: the channels' importance is
    the sum of the L2 norms of all their kernel slices; `floor(fraction *
    channels)` of the lowest go from each group (`scope="local"`), or, with
    `scope="global"`, the lowest `floor(fraction * all channels)` after
    dividing each group's importances by their mean, so that groups of
    different width compete fairly. A group keeps at least one channel.
    Producer columns, consumer rows, depthwise and attention slices are all
    zeroed, so `shrink` removes exactly these channels. `round_to=r` keeps
    a multiple of r channels in each group (fewer removed; the SIMD-friendly
    widths that XNNPACK and GPUs prefer), a whole group when it has fewer.
    The stem's group (layers reading the model input) is left whole unless
    `keep_stem=False`; the logits layer unless `exclude_logits=False`.

    `importance` chooses how channels are ranked (lowest removed first):
    `"magnitude"`, the summed L2 norms above (Torch-Pruning's group
    magnitude), or `"bn_scale"`, the summed |gamma| of the channel's
    normalization layers (Network Slimming; `bn_scale_importance`).

    Returns:
        `{kernel variable path: 0/1 array}` (TF-MOT's mask convention).
    """
    check_rate("fraction", fraction)
    if not isinstance(keep_stem, bool):
        raise TypeError(
            f"`keep_stem` must be a bool. Received: keep_stem={keep_stem!r}"
        )
    if scope not in SCOPES:
        raise ValueError(
            f"`scope` must be one of {SCOPES}. Received: scope={scope!r}"
        )
    graph = channel_graph(model)
    if round_to is not None and (
        isinstance(round_to, bool)
        or not isinstance(round_to, int)
        or round_to < 1
    ):
        raise ValueError(
            f"`round_to` must be None or an int >= 1. Received: "
            f"round_to={round_to!r}"
        )
    check_importance(importance)
    removed = choose_channels(
        graph,
        model,
        fraction,
        scope,
        exclude,
        exclude_logits,
        round_to,
        keep_stem,
        importance,
    )
    return masks_for(graph, removed)
