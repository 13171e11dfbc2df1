"""Physical shrinking: remove the channels pruning zeroed, through the whole
channel dependency graph (residuals, depthwise and separable convolutions,
squeeze-excite, concatenation, normalization, attention heads)."""

import keras
import numpy as np
from keras import ops

from keras_tdrop import keras_adapter
from keras_tdrop.channels import channel_graph
from keras_tdrop.channels import rebuild
from keras_tdrop.kernels import check_model
from keras_tdrop.pruning.apply import apply_masks
from keras_tdrop.pruning.constants import fold_constants

__all__ = [
    "ShrinkReport",
    "shrink",
]


class ShrinkReport(list):
    """Rows, one per channel group with zeroed channels: `group` (its
    producers), `layers`, `channels`, `zeroed`, `removed`, `kept` (zeroed
    but kept) and `reason`. Also `zeroed` and `removed` totals,
    `removed_fraction` and `max_abs_diff` (shrunk against masked, measured
    on a random batch)."""

    zeroed = removed = 0
    max_abs_diff = 0.0

    @property
    def removed_fraction(self):
        return 1.0 if not self.zeroed else self.removed / self.zeroed


def _check(model, masks, strict, approximate):
    check_model(model)
    try:
        keras_adapter.functional_of(model)
    except keras_adapter.GraphError as error:
        raise ValueError(
            f"{error} Shrinking needs a functional or Sequential model; on a "
            "subclassed model, masks (`compute_masks`, `apply_masks`) and "
            "sparse TFLite export (`to_tflite(..., sparse=True)`) work."
        ) from None
    if masks is not None and not isinstance(masks, dict):
        raise TypeError(
            "`masks` must be None or a dict {variable path: array}. "
            f"Received: masks={type(masks).__name__}"
        )
    for name, value in (("strict", strict), ("approximate", approximate)):
        if not isinstance(value, bool):
            raise TypeError(
                f"`{name}` must be a bool. Received: {name}={value!r}"
            )


def _zeroed(graph):
    """`(zeroed, partial)`: roots whose every writing slice is all zero
    (constant channels), and `{root: [layers]}` of roots that only some of
    their writers zero (per-layer masks across a residual sum)."""
    cache = {}
    zeroed, partial = [], {}
    for root, pieces in graph.root_slices().items():
        live = []
        writers = [(p, pos) for p, pos in pieces if p.role == "out"]
        for piece, positions in writers:
            key = id(piece.variable)
            if key not in cache:
                cache[key] = ops.convert_to_numpy(piece.variable)
            if np.take(cache[key], positions, axis=piece.axis).any():
                live.append(piece.layer.name)
        if writers and not live:
            zeroed.append(root)
        elif len(live) < len(writers):
            partial[root] = live
    return zeroed, partial


def _keep_one(graph, removable):
    """Keeps the first channel of any tensor or weight axis that would lose
    all of them; returns the roots kept so."""
    kept = set()
    going = graph.flags(removable)
    axes = [ids for ids in graph.tensors.values() if ids is not None]
    axes += [p.ids for p in graph.slices.values()]
    for ids in axes:
        roots = graph.roots(ids)
        if going[roots].all():
            going[roots[0]] = False
            removable.discard(int(roots[0]))
            kept.add(int(roots[0]))
    return kept


def _group_name(graph, roots):
    writers, members = [], []
    for root in roots:
        for piece, _ in graph.root_slices().get(root, []):
            name = piece.layer.name
            if piece.role == "out" and name not in writers:
                writers.append(name)
            if name not in members:
                members.append(name)
    name = "+".join(writers[:3]) + (
        f" (+{len(writers) - 3})" if len(writers) > 3 else ""
    )
    return name, members


def _sample(model, seed=0):
    rng = np.random.default_rng(seed)
    values = []
    for tensor in keras_adapter.functional_of(model).inputs:
        shape = [2] + [8 if d is None else d for d in tensor.shape[1:]]
        if "int" in str(tensor.dtype):
            values.append(rng.integers(0, 2, shape).astype(tensor.dtype))
        else:
            values.append(rng.normal(size=shape).astype(tensor.dtype))
    return values


def _max_diff(a, b, inputs):
    inputs = keras.tree.pack_sequence_as(
        keras_adapter.inputs_structure(a), inputs
    )
    outs_a = keras.tree.flatten(a(inputs, training=False))
    outs_b = keras.tree.flatten(b(inputs, training=False))
    return max(
        float(np.max(np.abs(ops.convert_to_numpy(x) - ops.convert_to_numpy(y))))
        for x, y in zip(outs_a, outs_b)
    )


def shrink(model, masks=None, strict=False, approximate=False):
    """Removes the channels that pruning left constant, for real.

    A channel whose every writing kernel slice (its producers' kernel
    columns, a depthwise kernel's channel, an attention head's output rows)
    is zero after `masks` carries a constant. `shrink` follows it through
    the channel dependency graph (`keras_tdrop.channels`) and deletes it
    everywhere: producers' columns and biases, BatchNormalization and other
    per-channel parameters, the branches of residual `Add`s, squeeze-excite
    gates, depthwise channels, concatenation slots, consumers' kernel rows,
    attention heads. Where a consumer's rows of a removed channel are not
    zero, the constant's contribution goes into the consumer's bias. What
    cannot be removed exactly stays, and the report says why: a group the
    graph does not understand (an unknown layer, a normalization over the
    channels, a model output), or a constant that a padded convolution sees
    unevenly (with `approximate=True` such channels are removed anyway and
    the error is measured).

    Args:
        model: a built functional or Sequential `keras.Model` (not modified;
            TargetedDropout wrappers are stripped first).
        masks: optional `{variable path: 0/1 array}` to apply first (e.g.
            `compute_masks(model, 0.5, targeting="unit", groups=True)`).
        strict: bool, raise a ValueError naming the layer when a zeroed
            channel cannot be removed.
        approximate: bool, remove channels whose constant cannot be folded
            exactly (padding), folding its mean contribution.

    Returns:
        `(smaller_model, report)`: a plain functional model, and a
        `ShrinkReport` (rows per group; `removed_fraction`,
        `max_abs_diff`).

    Example:
    >>> masks = compute_masks(model, 0.5, targeting="unit", groups=True)
    >>> small, report = shrink(model, masks)
    >>> report.removed_fraction, report.max_abs_diff
    """
    from keras_tdrop.wrapping import strip_targeted_dropout
    from keras_tdrop.wrapping import targeted_dropout_layers

    _check(model, masks, strict, approximate)
    if targeted_dropout_layers(model):
        model = strip_targeted_dropout(model)
    masked = apply_masks(model, masks) if masks else model
    graph = channel_graph(masked)
    blocked = graph.blocked_reasons()
    zeroed, partial = _zeroed(graph)
    reasons = {r: list(blocked[r]) for r in zeroed if r in blocked}
    for root, live in partial.items():
        reasons[root] = [
            "not zeroed in every layer that writes it ("
            + ", ".join(sorted(set(live)))
            + " keeps it)"
        ] + list(blocked.get(root, []))
    removable = {r for r in zeroed if r not in blocked}
    for root in _keep_one(graph, removable):
        reasons.setdefault(root, []).append("a layer keeps one channel")
    while True:
        deltas, refused, approximated = fold_constants(
            graph, masked, removable, approximate
        )
        for root, reason in refused.items():
            removable.discard(root)
            reasons.setdefault(root, []).append(reason)
        if not refused:
            break
    if strict:
        for root, why in reasons.items():
            why = [w for w in why if w != "a layer keeps one channel"]
            if why:
                raise ValueError(
                    f"strict=True and a zeroed channel cannot be removed: "
                    f"{why[0]}."
                )
    new_model = rebuild(graph, removable, deltas)
    report = ShrinkReport()
    by_space = {}
    zeroed = zeroed + list(partial)
    for root in zeroed:
        by_space.setdefault(graph.space_of(root), []).append(root)
    groups = graph.groups()
    for space, roots in by_space.items():
        name, members = _group_name(graph, groups[space])
        why = []
        for root in roots:
            why.extend(w for w in reasons.get(root, []) if w not in why)
        gone = sum(r in removable for r in roots)
        report.append(
            {
                "group": name,
                "layers": len(members),
                "channels": len(groups[space]),
                "zeroed": len(roots),
                "removed": gone,
                "kept": len(roots) - gone,
                "approximated": sum(r in approximated for r in roots),
                "reason": "; ".join(why),
            }
        )
    report.zeroed = len(zeroed)
    report.removed = len(removable)
    report.max_abs_diff = _max_diff(masked, new_model, _sample(masked))
    return new_model, report
