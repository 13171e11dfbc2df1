"""Copy a graph model with its weights; wrap its kernel layers in a kernel
wrapper (TargetedDropout, the kernel masks, the baselines) and unwrap."""

import keras

from keras_tdrop import keras_adapter as adapter
from keras_tdrop.channels.rebuild import named_input
from keras_tdrop.kernels import check_model
from keras_tdrop.kernels import kernel_variables
from keras_tdrop.kernels import resolve_exclude
from keras_tdrop.layers.kernel_wrapper import KernelWrapper
from keras_tdrop.layers.kernel_wrapper import kernel_wrappers
from keras_tdrop.layers.targeted_dropout import TargetedDropout

__all__ = [
    "apply_targeted_dropout",
    "apply_wrapper",
    "check_graph_model",
    "clone_with_weights",
    "strip_targeted_dropout",
    "strip_wrappers",
    "targeted_dropout_layers",
    "unwrap_clone",
]


def check_graph_model(model, name="model"):
    check_model(model, name)
    if not isinstance(model, keras.Sequential) and not adapter.is_graph_model(
        model
    ):
        raise ValueError(
            f"`{name}` must be a Sequential or functional model (a graph of "
            f"layers); a subclassed model cannot be rewritten. Received: "
            f"{name}={type(model).__name__} '{model.name}'"
        )
    if isinstance(model, keras.Sequential) and not model.built:
        raise ValueError(
            f"`{name}` must be built (give it an Input or call it once). "
            f"Received: unbuilt Sequential '{model.name}'"
        )


def _fresh(layer):
    """A new layer of the same config, built as `layer` was (if it was).

    A layer Keras cannot re-create from its config (no `get_config`, an
    `__init__` without `**kwargs`) is reused as it is when it holds no
    weights (nothing of it can be shared by mistake), and otherwise refused
    with an error naming it and what Keras needs. A custom layer whose
    `build` does not build its sublayers (they are built by its first
    call, as published code often writes them) is called once on symbolic
    inputs of its built shape, so the copy has every weight to copy into.
    """
    if not isinstance(layer, keras.layers.Layer):
        # A raw keras.ops operation (`x + y`, `x[:, 0]`): stateless, so the
        # operation itself serves when its config does not round-trip.
        try:
            return layer.__class__.from_config(layer.get_config())
        except (NotImplementedError, TypeError, ValueError):
            return layer
    try:
        new = layer.__class__.from_config(layer.get_config())
    except (NotImplementedError, TypeError, ValueError) as error:
        if not layer.weights:
            return layer
        raise ValueError(
            f"Layer '{layer.name}' ({type(layer).__name__}) holds weights "
            "and cannot be re-created from its config, so the model cannot "
            f"be copied: {type(error).__name__}: {error}. Keras needs a "
            "`get_config()` returning the constructor's arguments and an "
            "`__init__(self, ..., **kwargs)` passing `**kwargs` (name, "
            "trainable, dtype) to `super().__init__`."
        ) from None
    build_config = layer.get_build_config() if layer.built else None
    if build_config:
        shape = build_config.get("input_shape")
        own_build = type(new).build is not keras.layers.Layer.build
        if own_build or shape is None:
            new.build_from_config(build_config)
        if len(new.weights) != len(layer.weights) and shape is not None:
            new(keras.tree.map_shape_structure(keras.KerasTensor, shape))
        if len(new.weights) != len(layer.weights):
            raise ValueError(
                f"Layer '{layer.name}' ({type(layer).__name__}) has "
                f"{len(layer.weights)} weights, but a copy made from its "
                f"config and built on its input shape has "
                f"{len(new.weights)}. Give it a `build(input_shape)` that "
                "creates (or builds the sublayers holding) every weight."
            )
    return new


def clone_with_weights(model, clone_function=None):
    """Clones a graph model (nested models too) and copies every weight.

    `clone_function(layer)` may return a kernel wrapper around a fresh
    layer, or the bare inner layer of a kernel wrapper: weights follow. It
    sees every Layer once (a shared layer is cloned once and stays shared),
    never a nested Sequential or functional model (cloned in turn, keeping
    `trainable=False`) nor a raw `keras.ops` operation (copied as is).
    """
    check_graph_model(model)
    pairs = []
    clones = {}

    def clone(layer):
        if id(layer) in clones:
            return clones[id(layer)]
        if adapter.is_graph_model(layer):
            new = clone_graph(layer)
        elif not isinstance(layer, keras.layers.Layer):
            new = _fresh(layer)
        else:
            new = clone_function(layer) if clone_function else None
            if new is None:
                new = _fresh(layer)
            pairs.append((layer, new))
        clones[id(layer)] = new
        return new

    def clone_graph(graph):
        new = keras.models.clone_model(
            graph, input_tensors=_named_inputs(graph), clone_function=clone
        )
        if not graph.trainable:
            new.trainable = False
        return new

    new_model = clone_graph(model)
    for old, new in pairs:
        _copy_weights(old, new)
    return new_model


def unwrap_clone(model, types=KernelWrapper):
    """A copy of `model` with every `types` layer unwrapped.

    Each wrapper is replaced by a fresh copy of its inner layer, with the
    inner layer's stored weights. Returns `(copy, pairs)`, `pairs` the
    `(wrapper, fresh inner layer)` of each.
    """
    pairs = []

    def unwrap(layer):
        if isinstance(layer, types):
            new = _fresh(layer.layer)
            pairs.append((layer, new))
            return new
        return None

    return clone_with_weights(model, unwrap), pairs


def _named_inputs(model):
    """New inputs with the original names (clone_model renames them)."""
    if isinstance(model, keras.Sequential):
        return None
    return keras.tree.map_structure(
        named_input, adapter.inputs_structure(model)
    )


def _inner(layer):
    """The layer holding the original weights, inside a kernel wrapper."""
    return layer.layer if isinstance(layer, KernelWrapper) else layer


def _copy_weights(old, new):
    if type(old) is type(new):
        # Two wrappers of one kind: their own variables (gates, masks,
        # rates) too.
        new.set_weights(old.get_weights())
    else:
        _inner(new).set_weights(_inner(old).get_weights())


def apply_wrapper(
    model,
    cls,
    params,
    *,
    exclude=None,
    exclude_logits=True,
    seed=None,
    prefix,
):
    """A copy of `model` with every eligible layer in a `cls` wrapper.

    Eligible: a layer with a trainable kernel (see `keras_tdrop.kernels`),
    not excluded, not already in a kernel wrapper, of one of
    `cls.supported_types` if it names some. A layer holding kernels in
    sublayers (a custom layer, a subclassed model, a Keras wrapper) is
    wrapped as one. Each wrapper is `cls(fresh copy of the layer,
    seed=seed + i, name=f"{prefix}_{layer.name}", **params)`, `params`
    checked once before any work; the copy starts from `model`'s weights.
    """
    check_graph_model(model)
    cls(keras.layers.Dense(1, name="check"), name="check", **params)
    excluded = resolve_exclude(model, exclude, exclude_logits)
    types = cls.supported_types
    counter = [0]

    def wrap(layer):
        if isinstance(layer, KernelWrapper) or excluded(layer):
            return None
        if not kernel_variables(layer):
            return None
        if types is not None and type(layer) not in types:
            return None
        layer_seed = None if seed is None else seed + counter[0]
        counter[0] += 1
        name = f"{prefix}_{layer.name}"
        return cls(_fresh(layer), seed=layer_seed, name=name, **params)

    return clone_with_weights(model, wrap)


def strip_wrappers(model, types=KernelWrapper, **options):
    """A plain copy of `model`: every `types` wrapper replaced by its inner
    layer with `wrapper.folded_weights(**options)`, so that the copy
    computes what `model` computes at inference."""
    check_graph_model(model)
    stripped, pairs = unwrap_clone(model, types)
    for wrapper, new in pairs:
        new.set_weights(wrapper.folded_weights(**options))
    return stripped


def apply_targeted_dropout(
    model,
    rate=0.5,
    target_rate=0.5,
    targeting="weight",
    reference=None,
    keep_per_column=None,
    exclude=None,
    exclude_logits=True,
    seed=None,
    groups=False,
    **kwargs,
):
    """Returns a copy of `model` with every eligible layer in TargetedDropout.

    Eligible: every trainable layer with a kernel (see
    `keras_tdrop.kernels`) that is not excluded. The layer producing each of
    the model's outputs (the logits, found through trailing kernel-free
    layers such as Softmax) is excluded by default, as in the references.
    A frozen layer (`trainable=False`, or inside a frozen nested model) is
    not wrapped: its kernels do not train, so there is nothing to make
    robust; it stays frozen in the copy. Nested models are wrapped inside,
    a shared layer gets one wrapper (shared as the layer was), a custom
    layer holding kernels in sublayers (a KerasHub `TransformerEncoder`) is
    wrapped as one, and raw `keras.ops` nodes (`x + y`) are kept as they
    are. The copy starts from `model`'s weights; `model` itself is not
    modified. A nested model of a subclass built functionally (a KerasHub
    backbone) comes back as a plain functional model computing the same.

    Each wrapper selects its own kernels, so the training graph grows with
    the number of layers; on networks of hundreds of small layers
    (NASNetMobile) `ModelTargetedDropout`, which selects all kernels of one
    size together, builds it faster (see BENCHMARKS.md, issue 14).

    Args:
        model: a built Sequential or functional `keras.Model`.
        rate, target_rate, targeting, reference, keep_per_column: passed to
            every `TargetedDropout`.
        exclude: layer name, list of names, or a predicate `layer -> bool`.
        exclude_logits: bool, whether to skip the logits layer.
        seed: optional int; layer i gets `seed + i`.
        groups: bool, group-aware unit targeting (`targeting="unit"`): the
            layers of one channel group of the channel dependency graph
            must drop the same channels, which per-layer wrappers cannot
            agree on; so the copy is returned inside one
            `ModelTargetedDropout(copy, ..., groups=True)` instead (its
            moving statistics held on dropped channels, see
            `hold_statistics`), with `exclude`'s layers' kernels excluded.
            Train the returned model; `.model` is the trained network.
        **kwargs: other `TargetedDropout` arguments (`prune_at_inference`),
            or with `groups=True` other `ModelTargetedDropout` arguments
            (`noise`, `hold_statistics`).

    Example:
    >>> td_model = apply_targeted_dropout(model, rate=0.5, target_rate=0.75,
    ...                                   exclude=["stem"])
    >>> grouped = apply_targeted_dropout(model, targeting="unit",
    ...                                  groups=True)
    """
    if not isinstance(groups, bool):
        raise TypeError(f"`groups` must be a bool. Received: groups={groups!r}")
    params = dict(
        rate=rate,
        target_rate=target_rate,
        targeting=targeting,
        reference=reference,
        keep_per_column=keep_per_column,
        **kwargs,
    )
    if groups:
        return _grouped(model, params, exclude, exclude_logits, seed)
    return apply_wrapper(
        model,
        TargetedDropout,
        params,
        exclude=exclude,
        exclude_logits=exclude_logits,
        seed=seed,
        prefix="td",
    )


def _grouped(model, params, exclude, exclude_logits, seed):
    """`apply_targeted_dropout(..., groups=True)`: a copy of `model` in one
    group-targeting `ModelTargetedDropout` with `params` (the per-layer
    arguments, checked here)."""
    from keras_tdrop.kernels import iter_layers
    from keras_tdrop.layers.model_targeted_dropout import ModelTargetedDropout

    params = dict(params)
    keep_per_column = params.pop("keep_per_column")
    targeting, reference = params.pop("targeting"), params.pop("reference")
    if keep_per_column is not None:
        raise ValueError(
            "`keep_per_column` is a per-layer setting, not one of "
            "groups=True. Received: keep_per_column="
            f"{keep_per_column!r}"
        )
    if targeting != "unit" or reference is not None:
        raise ValueError(
            "`groups=True` targets whole channels of the channel graph: it "
            'needs targeting="unit" and reference=None. Received: '
            f"targeting={targeting!r}, reference={reference!r}"
        )
    check_graph_model(model)
    copy = clone_with_weights(model)
    excluded = resolve_exclude(copy, exclude, exclude_logits=False)
    paths = [
        kernel.path
        for layer in iter_layers(copy)
        if excluded(layer)
        for kernel in kernel_variables(layer)
    ]
    return ModelTargetedDropout(
        copy,
        targeting="unit",
        exclude=sorted(set(paths)) or None,
        exclude_logits=exclude_logits,
        seed=seed,
        groups=True,
        **params,
    )


def strip_targeted_dropout(model, prune_targeted=None):
    """Returns a plain copy of `model`: every TargetedDropout unwrapped.

    The inner layers keep their names and weights; nothing of targeted
    dropout is left, so the result saves, converts and serves as any model.
    The copy computes what `model` computes at inference: a wrapper that
    prunes at inference (`prune_at_inference=True`, or the `"t2t"` and
    `"for_ai"` references' own choice) has its targeted set zeroed in the
    copy's kernels. `model` is not modified.

    Args:
        model: a Sequential or functional `keras.Model`.
        prune_targeted: `None` (the default) folds the inference pruning of
            the wrappers that prune at inference, as above; `False` keeps
            every stored kernel as it is (the dense trained weights);
            `True` zeroes every wrapper's targeted set (at its current
            alpha and gamma), whether it prunes at inference or not.

    Example:
    >>> plain = strip_targeted_dropout(td_model)
    >>> dense = strip_targeted_dropout(td_model, prune_targeted=False)
    """
    check_graph_model(model)
    if prune_targeted not in (None, True, False):
        raise TypeError(
            "`prune_targeted` must be None or a bool. "
            f"Received: prune_targeted={prune_targeted!r}"
        )
    return strip_wrappers(model, TargetedDropout, prune=prune_targeted)


def targeted_dropout_layers(model):
    """Every TargetedDropout in `model`, nested models included."""
    if not isinstance(model, keras.layers.Layer):
        raise TypeError(
            "`model` must be a keras.Model (or layer). "
            f"Received: model={model!r}"
        )
    return kernel_wrappers(model, TargetedDropout)
