"""Which channel groups pruning and group-aware targeting may act on."""

from keras_tdrop import keras_adapter
from keras_tdrop.kernels import kernel_variables
from keras_tdrop.kernels import resolve_exclude

__all__ = [
    "blocked_summary",
    "is_kernel_slice",
    "prunable_groups",
]


def is_kernel_slice(piece):
    """Whether a graph slice lies on a kernel (or an embedding table)."""
    variable = piece.variable
    return any(variable is k for k in kernel_variables(piece.layer)) or (
        variable.name == "embeddings"
    )


def prunable_groups(
    graph, model, exclude=None, exclude_logits=True, keep_stem=True
):
    """`{space: [roots]}`: the channels group pruning may remove.

    Left out: blocked channels, channels no kernel writes, and whole groups
    written by an excluded layer, by the logits layer (with
    `exclude_logits`) or, with `keep_stem`, by the stem (a layer that
    reads a model input).
    """
    excluded = resolve_exclude(model, exclude, exclude_logits)
    blocked = graph.blocked_reasons()
    pieces = graph.root_slices()
    inputs = {
        i for ids in _input_ids(graph, model) for i in graph.roots(ids).tolist()
    }
    stems = set()
    for root in inputs if keep_stem else ():
        for piece, _ in pieces.get(root, []):
            if piece.role == "in":
                stems.add(id(piece.layer))
    chosen = {}
    for space, roots in graph.groups().items():
        writers = [
            piece.layer
            for r in roots
            for piece, _ in pieces.get(r, [])
            if piece.role == "out" and is_kernel_slice(piece)
        ]
        if not writers or any(excluded(w) or id(w) in stems for w in writers):
            continue
        free = [
            r
            for r in roots
            if r not in blocked
            and any(
                p.role == "out" and is_kernel_slice(p) for p, _ in pieces[r]
            )
        ]
        if free:
            chosen[space] = free
    return chosen


def blocked_summary(graph):
    """Why a model's channels are kept, in words, for a message saying that
    no group can be cut: the graph's reasons (besides the model's inputs
    and outputs) and how to teach it a custom layer."""
    ends = ("a model input", "a model output")
    reasons = sorted(
        {w for why in graph.blocked_reasons().values() for w in why} - set(ends)
    )
    return (
        "The stem group (layers reading a model input), the logits and "
        "excluded layers are left whole"
        + (
            f", and channels are kept here because {'; '.join(reasons)}"
            if reasons
            else ""
        )
        + ". A custom layer without a channel rule keeps every channel it "
        "reads and writes: teach the graph with "
        "`keras_tdrop.channels.register_channel_rule` (see the custom "
        "layers guide)"
    )


def _input_ids(graph, model):
    for tensor in keras_adapter.functional_of(model).inputs:
        ids = graph.tensors.get(id(tensor))
        if ids is not None:
            yield ids
