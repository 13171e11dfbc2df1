"""Group-aware unit targeting: every kernel of a channel group targets the
same channels, chosen each step from the group's summed norms."""

import warnings

import numpy as np
from keras import ops

from keras_tdrop import keras_adapter
from keras_tdrop import targeting as targeting_lib
from keras_tdrop.channels import channel_graph
from keras_tdrop.channels.groups import blocked_summary
from keras_tdrop.channels.groups import is_kernel_slice
from keras_tdrop.channels.groups import prunable_groups
from keras_tdrop.channels.ordering import kept_channels

__all__ = [
    "GroupTargeting",
]


class _Member:
    """One kernel slice of a group: `variable`'s `axis`, and for each of its
    positions the index of its channel in the group (`n` = not in it)."""

    def __init__(self, variable, axis, segments, writes):
        self.variable, self.axis = variable, axis
        self.segments, self.writes = segments, writes


class GroupTargeting:
    """The channel groups of a graph model, and their targeted channels.

    Built once from the model's channel graph (`keras_tdrop.channels`):
    the groups group pruning may remove (the stem and, with
    `exclude_logits`, the logits left out) whose writing kernels are all
    in `kernels`. At each step, a group's channel importance is the sum
    over all its kernel slices (writers' columns, readers' rows, depthwise
    and attention slices) of their L2 norms, exactly as
    `compute_masks(..., groups=True)` ranks them, and the
    `floor(target_rate * channels)` lowest are targeted in every writing
    kernel (ties go to the lower index).

    The group's moving statistics (the non-trainable per-channel
    variables of its normalization layers: a BatchNormalization's
    `moving_mean` and `moving_variance`) are listed too, so that a step
    which drops a channel can leave that channel's statistics as they were
    (`dropped_and_held`): pruning removes the channel together with its
    statistics, and the step rehearses that without teaching the moving
    statistics a variance of zero.
    """

    def __init__(self, model, kernels, exclude_logits=True, exclude=None):
        try:
            keras_adapter.functional_of(model)
        except keras_adapter.GraphError as error:
            raise ValueError(
                f"groups=True needs the channel graph of a functional or "
                f"Sequential model. {error}"
            ) from None
        graph = channel_graph(model)
        chosen = {id(k) for k in kernels}
        self.groups = []
        self.held = []
        covered = set()
        for roots in prunable_groups(
            graph, model, exclude, exclude_logits
        ).values():
            index = {r: i for i, r in enumerate(roots)}
            members, held = [], []
            for piece in graph.slices.values():
                statistic = piece.role == "param" and _is_statistic(piece)
                if not statistic and (
                    piece.role == "param" or not is_kernel_slice(piece)
                ):
                    continue
                found = graph.roots(piece.ids)
                segments = np.array(
                    [index.get(r, len(roots)) for r in found.tolist()],
                    dtype="int32",
                )
                if np.all(segments == len(roots)):
                    continue
                if statistic:
                    held.append(
                        _Member(piece.variable, piece.axis, segments, True)
                    )
                    continue
                members.append(
                    _Member(
                        piece.variable,
                        piece.axis,
                        segments,
                        piece.role == "out",
                    )
                )
            writers = [m for m in members if m.writes]
            if not all(id(m.variable) in chosen for m in writers):
                continue
            self.groups.append((len(roots), members))
            self.held.append(held)
            covered.update(id(m.variable) for m in writers)
        if not self.groups:
            warnings.warn(
                f"groups=True: no channel group of model '{model.name}' "
                "can be dropped, so no channel is targeted in training. "
                f"{blocked_summary(graph)}, or target per layer "
                "(groups=False).",
                UserWarning,
                stacklevel=3,
            )
        self.grouped = [k for k in kernels if id(k) in covered]
        self.ungrouped = [k for k in kernels if id(k) not in covered]

    def targeted(self, values, target_rate):
        """`[(n, members, mask)]`: per group, its targeted channels (a
        boolean `(n,)` tensor), reading kernels from `values`
        (`{id(variable): tensor}`)."""
        chosen = []
        for n, members in self.groups:
            scores = ops.zeros((n + 1,), "float32")
            for m in members:
                value = ops.square(ops.cast(values[id(m.variable)], "float32"))
                moved = ops.moveaxis(value, m.axis, 0)
                squares = ops.sum(
                    ops.reshape(moved, (moved.shape[0], -1)), axis=1
                )
                per_channel = ops.segment_sum(
                    squares, ops.convert_to_tensor(m.segments), n + 1
                )
                scores = scores + ops.sqrt(per_channel)
            k = targeting_lib.target_count(target_rate, n)
            mask = targeting_lib.targeted_rows(
                ops.reshape(scores[:n], (1, n)), k
            )
            chosen.append((n, members, ops.reshape(mask, (n,))))
        return chosen

    def kernel_masks(self, values, target_rate):
        """`{id(variable): boolean mask of its shape}`: the targeted
        elements of every writing kernel of a group."""
        chosen = self.targeted(values, target_rate)
        return self._spread([(members, mask) for _, members, mask in chosen])

    def _spread(self, per_group, readers=False):
        """`{id(variable): boolean mask}` from `[(members, (n,) bool)]`:
        each group's channel vector laid over its writing kernels (and,
        with `readers`, over every kernel slice of the group)."""
        masks = {}
        for members, mask in per_group:
            padded = ops.concatenate([mask, ops.zeros((1,), "bool")])
            for m in members:
                if not (m.writes or readers):
                    continue
                along = ops.take(padded, ops.convert_to_tensor(m.segments))
                shape = [1] * len(m.variable.shape)
                shape[m.axis] = m.variable.shape[m.axis]
                full = ops.broadcast_to(
                    ops.reshape(along, shape), tuple(m.variable.shape)
                )
                old = masks.get(id(m.variable))
                masks[id(m.variable)] = (
                    full if old is None else ops.logical_or(old, full)
                )
        return masks

    def dropped(
        self, values, rate, target_rate, seed, noise="element", rescale=False
    ):
        """`[(variable, dropped value)]` for the grouped kernels.

        Each targeted element is zeroed with probability `rate`: one draw
        per element (`noise="element"`), or one per targeted channel of a
        group (`noise="column"`), the channel then dropped in every writing
        kernel of the group at once. With `rescale`, the surviving targeted
        elements are scaled by `1 / (1 - rate)`.
        """
        return self.dropped_and_held(
            values, rate, target_rate, seed, noise, rescale
        )[0]

    def dropped_and_held(
        self, values, rate, target_rate, seed, noise="element", rescale=False
    ):
        """`(dropped, held)`: `dropped` as `dropped` returns it, and `held`,
        `[(variable, boolean mask of its shape)]`: for every moving
        statistic of a group (see the class), the channels dropped whole
        at this step, whose statistics the step must leave unchanged. Only
        `noise="column"` drops whole channels; with element noise `held`
        is empty."""
        chosen = self.targeted(values, target_rate)
        masks = self._spread([(members, mask) for _, members, mask in chosen])
        drops = held = None
        if noise == "column":
            per_group = [
                targeting_lib.draw_drop(mask, rate, seed, (n,))
                for n, _, mask in chosen
            ]
            drops = self._spread(
                [
                    (members, drop)
                    for (_, members, _), drop in zip(chosen, per_group)
                ]
            )
            held = self._spread(list(zip(self.held, per_group)))
        out = []
        for kernel in self.grouped:
            mask = masks[id(kernel)]
            value = values[id(kernel)]
            if drops is None:
                drop = targeting_lib.draw_drop(mask, rate, seed, kernel.shape)
            else:
                drop = drops[id(kernel)]
            out.append(
                (
                    kernel,
                    targeting_lib.apply_drop(value, mask, drop, rate, rescale),
                )
            )
        if held is None:
            return out, []
        variables = {
            id(m.variable): m.variable for group in self.held for m in group
        }
        return out, [(variables[key], mask) for key, mask in held.items()]

    def truncated(self, values, width, round_to=1):
        """`(truncated, held)` at `width` (a float or a scalar tensor).

        Every group keeps its first `kept_channels(n, width, round_to)`
        channels; the others are zeroed in every kernel slice of the group
        (writers' columns, readers' rows, depthwise and attention slices),
        the slices `compute_masks(..., groups=True)` and `ordered_masks`
        zero, so the step computes what the truncated network computes.
        `truncated` is `[(variable, value)]` for every kernel holding such
        a slice (read from `values`, `{id(variable): tensor}`); `held`,
        `[(variable, boolean mask)]`, the moving statistics of the cut
        channels, which the step must leave as they were.
        """
        beyond = [
            ops.greater_equal(
                ops.arange(n, dtype="int32"),
                kept_channels(n, width, round_to),
            )
            for n, _ in self.groups
        ]
        masks = self._spread(
            [(members, cut) for (_, members), cut in zip(self.groups, beyond)],
            readers=True,
        )
        variables = {
            id(m.variable): m.variable
            for _, group in self.groups
            for m in group
        }
        out = [
            (
                variables[key],
                ops.where(mask, ops.zeros_like(values[key]), values[key]),
            )
            for key, mask in masks.items()
        ]
        held = self._spread(list(zip(self.held, beyond)))
        statistics = {
            id(m.variable): m.variable for group in self.held for m in group
        }
        return out, [(statistics[key], mask) for key, mask in held.items()]


def _is_statistic(piece):
    """Whether a per-channel slice is a moving statistic (a non-trainable
    variable of a normalization layer, updated by its training calls)."""
    return not piece.variable.trainable and piece.variable.name.startswith(
        "moving_"
    )
