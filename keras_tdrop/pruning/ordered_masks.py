"""Masks that keep the first channels of every channel group: what
ordered channel dropout trains for, and what `truncate` cuts."""

import numbers

from keras_tdrop.channels import channel_graph
from keras_tdrop.channels.groups import blocked_summary
from keras_tdrop.channels.groups import prunable_groups
from keras_tdrop.channels.ordering import check_round_to
from keras_tdrop.channels.ordering import check_width
from keras_tdrop.channels.ordering import kept_channels
from keras_tdrop.pruning.group_masks import masks_for

__all__ = [
    "group_writers",
    "ordered_masks",
    "ordered_roots",
]


def group_writers(graph, roots):
    """The names of the layers writing a group's channels, sorted."""
    pieces = graph.root_slices()
    return sorted(
        {
            piece.layer.name
            for root in roots
            for piece, _ in pieces.get(root, [])
            if piece.role == "out"
        }
    )


def _group_widths(graph, groups, width):
    """`{space: width}` from a fraction or a `{layer name: width}` dict."""
    if not isinstance(width, dict):
        width = check_width(width)
        return {space: width for space in groups}
    chosen, named = {}, set()
    for space, roots in groups.items():
        names = [n for n in group_writers(graph, roots) if n in width]
        values = {repr(width[n]) for n in names}
        if len(values) > 1:
            raise ValueError(
                f"`width` gives layers {names}, which write one channel "
                f"group, different widths. Received: width={width!r}"
            )
        if names:
            value = width[names[0]]
            if isinstance(value, numbers.Integral) and not isinstance(
                value, bool
            ):
                if not 1 <= value <= len(roots):
                    raise ValueError(
                        f"`width` for layer '{names[0]}' must be a fraction "
                        f"in (0, 1] or a channel count in [1, {len(roots)}]"
                        f". Received: width={width!r}"
                    )
                value = value / len(roots)
            chosen[space] = check_width(value, f"width['{names[0]}']")
            named.update(names)
        else:
            chosen[space] = 1.0
    unknown = sorted(set(width) - named)
    if unknown:
        cuttable = sorted(
            {
                n
                for roots in groups.values()
                for n in group_writers(graph, roots)
            }
        )
        raise ValueError(
            f"`width` names layers that write no channel group truncation "
            f"can cut: {unknown}; those that do are {cuttable}. "
            f"Received: width={width!r}"
        )
    return chosen


def ordered_roots(
    graph, model, width, round_to=1, exclude=None, exclude_logits=True
):
    """The channels (graph roots) truncation at `width` removes: in every
    group `prunable_groups` lists, all but the first
    `kept_channels(n, width, round_to)`. Raises a ValueError, with the
    graph's reasons, where no group can be cut."""
    round_to = check_round_to(round_to)
    groups = prunable_groups(graph, model, exclude, exclude_logits)
    if not groups:
        raise ValueError(
            f"Model '{model.name}' has no channel group that truncation "
            f"can cut (exclude={exclude!r}, exclude_logits="
            f"{exclude_logits}). {blocked_summary(graph)}."
        )
    widths = _group_widths(graph, groups, width)
    removed = set()
    for space, roots in groups.items():
        removed.update(
            roots[kept_channels(len(roots), widths[space], round_to) :]
        )
    return removed


def ordered_masks(model, width, round_to=1, exclude=None, exclude_logits=True):
    """Masks keeping the first channels of every channel group.

    Every group of the channel dependency graph that group pruning may
    cut (see `compute_masks(..., groups=True)`) keeps its first
    `kept_channels(n, width, round_to)` channels in every member; the
    others are zeroed in every kernel slice (writers' columns, readers'
    rows, depthwise and attention slices), so that `shrink` removes them
    exactly. These are the channels `ModelOrderedDropout` drops when it
    trains at `width`, and those `truncate(model, width)` cuts.

    Args:
        model: a functional or Sequential Keras model.
        width: a fraction in (0, 1] for every group, or a dict
            `{layer name: fraction or channel count}` naming a layer that
            writes the group (other groups keep all their channels).
        round_to: int >= 1, keep a multiple of it in each group.
        exclude: optional list of layer names whose groups stay whole.
        exclude_logits: bool, leave the logits layer's channels whole.

    Returns:
        `{kernel variable path: 0/1 array}` (TF-MOT's mask convention).
    """
    graph = channel_graph(model)
    removed = ordered_roots(
        graph, model, width, round_to, exclude, exclude_logits
    )
    return masks_for(graph, removed)
