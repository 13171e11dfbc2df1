"""The channel dependency graph of a Keras model.

Every channel (a position on the last axis of a tensor, and the weight
slices that read or write it) gets an integer id. Layers that must keep the
same channels (the branches of an `Add`, a squeeze-excite gate and what it
gates, a depthwise convolution's input and output) join ids with a
union-find, so each final id (a *root*) is one unit that can only be removed
whole: a set of `(layer, weight, axis, index)` slices. Roots that the graph
cannot remove (a model input or output, a layer it does not know, a
normalization over the channels) are *blocked*, with the reason.

Ids are also grouped into *spaces*: the channels one producer created, merged
when ids of two spaces join (the layers around one residual stream form one
space). A space is what Torch-Pruning calls a dependency group: pruning
removes `floor(p * channels)` of its roots.
"""

import numpy as np

from keras_tdrop import keras_adapter
from keras_tdrop.kernels import check_model

__all__ = [
    "ChannelGraph",
    "ROLES",
    "Slice",
    "channel_graph",
]

ROLES = ("out", "in", "member", "param")


class Slice:
    """One axis of one weight, and the channel id of each of its indices.

    `role` is `"out"` for the slices that write a channel (a kernel's output
    columns, a depthwise kernel's channels, an embedding's columns: when
    they are all zero, the channel is constant), `"in"` for the slices that
    read one (a kernel's input rows), `"member"` for kernel slices that go
    with a unit without touching a tensor (an attention head's query, key
    and value kernels), `"param"` for per-channel parameters (biases,
    normalization scales and statistics).
    """

    def __init__(self, layer, index, axis, ids, role):
        self.layer, self.index, self.axis = layer, index, axis
        self.ids, self.role = ids, role

    @property
    def variable(self):
        return self.layer.weights[self.index]

    def __repr__(self):
        return (
            f"Slice({self.layer.name}, {self.variable.name}, axis={self.axis}, "
            f"role={self.role})"
        )


class ChannelGraph:
    """Channels of a built functional or Sequential model, and who shares
    them. Build it with `channel_graph(model)`."""

    def __init__(self, model):
        self.model = model
        self.parent = []
        self.space = []
        self.space_parent = []
        self.slices = {}
        self.tensors = {}
        self.blocked = {}
        self.layers = []

    # -- union-find over ids and over spaces --------------------------------
    def fresh(self, count):
        """`count` new ids in a new space."""
        space = len(self.space_parent)
        self.space_parent.append(space)
        start = len(self.parent)
        self.parent.extend(range(start, start + count))
        self.space.extend([space] * count)
        return np.arange(start, start + count, dtype="int64")

    def find(self, i):
        parent = self.parent
        root = i
        while parent[root] != root:
            root = parent[root]
        while parent[i] != root:
            parent[i], i = root, parent[i]
        return root

    def _find_space(self, s):
        while self.space_parent[s] != s:
            self.space_parent[s] = self.space_parent[self.space_parent[s]]
            s = self.space_parent[s]
        return s

    def union(self, a, b):
        """Joins ids `a[i]` and `b[i]` (arrays of equal length)."""
        for x, y in zip(np.asarray(a).tolist(), np.asarray(b).tolist()):
            rx, ry = self.find(x), self.find(y)
            if rx != ry:
                self.parent[ry] = rx
                sx = self._find_space(self.space[rx])
                sy = self._find_space(self.space[ry])
                if sx != sy:
                    self.space_parent[sy] = sx

    def roots(self, ids):
        """The root of each id (an array)."""
        frozen = getattr(self, "_root_of", None)
        if frozen is not None:
            return frozen[np.asarray(ids, dtype="int64")]
        return np.array(
            [self.find(i) for i in np.asarray(ids).tolist()], dtype="int64"
        )

    def freeze(self):
        """Caches every id's root once tracing is done (then `roots` is a
        lookup)."""
        self._root_of = np.array(
            [self.find(i) for i in range(len(self.parent))], dtype="int64"
        )
        self._root_slices = None

    def flags(self, roots):
        """A boolean array over all ids, True at `roots`: `flags[ids]` says
        which of an axis' channels are among them."""
        found = np.zeros(len(self.parent), bool)
        found[list(roots)] = True
        return found

    def space_of(self, root):
        return self._find_space(self.space[root])

    # -- what rules record --------------------------------------------------
    def weight_index(self, layer, variable):
        for index, weight in enumerate(layer.weights):
            if weight is variable:
                return index
        raise ValueError(f"{variable.path} is not a weight of {layer.name}")

    def bind(self, layer, variable, axis, ids, role):
        """Records that `variable`'s `axis` carries channels `ids`; a slice
        bound before (a layer called twice) joins them. Returns the ids."""
        index = self.weight_index(layer, variable)
        axis = axis % len(variable.shape)
        ids = np.asarray(ids, dtype="int64")
        if len(ids) != variable.shape[axis]:
            raise ValueError(
                f"{variable.path} axis {axis} has {variable.shape[axis]} "
                f"entries, the channels {len(ids)}"
            )
        key = (id(layer), index, axis)
        known = self.slices.get(key)
        if known is None:
            self.slices[key] = Slice(layer, index, axis, ids.copy(), role)
            if layer not in self.layers:
                self.layers.append(layer)
        else:
            self.union(known.ids, ids)
        return self.slices[key].ids

    def output_ids(self, layer, variable, axis):
        """The ids `variable`'s `axis` writes: new ones the first time,
        the same ones when the layer is called again."""
        index = self.weight_index(layer, variable)
        known = self.slices.get((id(layer), index, axis % len(variable.shape)))
        if known is not None:
            return known.ids
        ids = self.fresh(variable.shape[axis])
        return self.bind(layer, variable, axis, ids, "out")

    def block(self, ids, reason):
        """Marks channels `ids` as not removable, for `reason`."""
        for i in np.asarray(ids).tolist():
            self.blocked.setdefault(i, []).append(reason)

    # -- reading the result -------------------------------------------------
    def blocked_reasons(self):
        """`{root: [reasons]}` for every blocked root."""
        reasons = {}
        for i, why in self.blocked.items():
            bucket = reasons.setdefault(self.find(i), [])
            bucket.extend(w for w in why if w not in bucket)
        return reasons

    def slices_of(self, layer):
        return [s for s in self.slices.values() if s.layer is layer]

    def root_slices(self):
        """`{root: [(slice, positions)]}`: where each channel unit lives."""
        cached = getattr(self, "_root_slices", None)
        if cached is not None:
            return cached
        found = {}
        for piece in self.slices.values():
            roots = self.roots(piece.ids)
            order = np.argsort(roots, kind="stable")
            unique, starts = np.unique(roots[order], return_index=True)
            for root, positions in zip(
                unique.tolist(), np.split(order, starts[1:])
            ):
                found.setdefault(root, []).append((piece, positions))
        if getattr(self, "_root_of", None) is not None:
            self._root_slices = found
        return found

    def groups(self):
        """`{space: sorted roots}`: the dependency groups."""
        members = {}
        for piece in self.slices.values():
            for root in set(self.roots(piece.ids).tolist()):
                members.setdefault(self.space_of(root), set()).add(root)
        return {s: sorted(r) for s, r in members.items()}


def channel_graph(model, strict=False, graph=None):
    """Builds the channel dependency graph of a functional or Sequential
    model.

    Every operation of the graph is traced with the rule registered for its
    type (see `register_channel_rule`); an operation without a rule keeps
    its channels (they are blocked, with the reason), or, with
    `strict=True`, raises a ValueError naming it.

    Args:
        model: a built functional or Sequential `keras.Model` (nested
            models, shared layers, raw `keras.ops` nodes and dict inputs
            are followed).
        strict: bool, raise on an operation the graph does not know.
        graph: an empty `ChannelGraph(model)` to fill (rules may keep
            their own records on it), or None.

    Returns:
        A `ChannelGraph`.

    Example:
    >>> graph = channel_graph(keras.applications.MobileNetV2(weights=None))
    >>> len(graph.groups())
    """
    from keras_tdrop.channels.rules import trace_model

    check_model(model)
    if not isinstance(strict, bool):
        raise TypeError(f"`strict` must be a bool. Received: strict={strict!r}")
    if graph is not None and not isinstance(graph, ChannelGraph):
        raise TypeError(
            f"`graph` must be None or a ChannelGraph. Received: graph={graph!r}"
        )
    keras_adapter.functional_of(model)
    graph = ChannelGraph(model) if graph is None else graph
    graph.strict = strict
    inputs = []
    for tensor in keras_adapter.functional_of(model).inputs:
        ids = graph.fresh(tensor.shape[-1]) if tensor.shape else None
        if ids is not None:
            graph.block(ids, "a model input")
        inputs.append(ids)
    outputs = trace_model(graph, model, inputs)
    for ids in outputs:
        if ids is not None:
            graph.block(ids, "a model output")
    graph.freeze()
    return graph
