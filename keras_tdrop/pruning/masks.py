"""Post hoc pruning masks, chosen by the targeting functions of training.

`compute_masks` and `nm_masks` choose the masks, `prune` applies them to a
copy of the model. This module is also the public home of `apply_masks`,
`copy_model` (`apply.py`), `prunable_kernels` (`prunable.py`) and the
option checks (`mask_options.py`).
"""

import warnings

import numpy as np

from keras_tdrop import keras_adapter
from keras_tdrop import targeting as targeting_lib
from keras_tdrop.kernels import check_model
from keras_tdrop.pruning.apply import apply_masks
from keras_tdrop.pruning.apply import check_inplace
from keras_tdrop.pruning.apply import copy_model
from keras_tdrop.pruning.mask_options import CRITERIA
from keras_tdrop.pruning.mask_options import SCOPES
from keras_tdrop.pruning.mask_options import check_finite
from keras_tdrop.pruning.mask_options import check_options
from keras_tdrop.pruning.mask_ranking import block_masks
from keras_tdrop.pruning.mask_ranking import keep_mask
from keras_tdrop.pruning.mask_ranking import kernel_importances
from keras_tdrop.pruning.mask_ranking import lowest_entries
from keras_tdrop.pruning.prunable import prunable_kernels

__all__ = [
    "CRITERIA",
    "SCOPES",
    "apply_masks",
    "check_options",
    "compute_masks",
    "copy_model",
    "nm_masks",
    "prunable_kernels",
    "prune",
]


def compute_masks(
    model,
    fraction,
    targeting="weight",
    exclude=None,
    exclude_logits=True,
    scope="local",
    block_size=None,
    criterion="magnitude",
    scores=None,
    seed=None,
    groups=False,
    round_to=None,
    importance="magnitude",
):
    """Pruning masks, `{variable path: 0/1 array}` (1 = keep).

    By default, for every prunable kernel, `fraction` p removes exactly
    `floor(p * rows)` lowest-|w| weights per output column
    (`targeting="weight"`) or `floor(p * cols)` lowest-L2 columns
    (`"unit"`); p is uniform per layer, as in for-ai/TD's pruning
    evaluation. Masks have the kernel's shape and dtype, TF-MOT's
    convention. Variants, all with exact counts (ties go to the lower
    index):

    - `scope="global"`: one threshold over all prunable kernels together:
      the `floor(p * N)` lowest |w| of all N weights, or the `floor(p * C)`
      lowest-L2 columns of all C columns.
    - `block_size=M` (weight targeting): N:M structure as TF-MOT's
      `sparsity_m_by_n` defines it: in every block of M consecutive weights
      along the input axis (per output unit and kernel position), the
      `floor(p * M)` lowest |w| are removed; a short last block counts its
      missing entries as removed. `block_size=4, fraction=0.5` is 2:4 (see
      `nm_masks`).
    - `criterion="random"`: the same counts, chosen at random (`seed`): the
      random-pruning baseline.
    - `scores={path: array}`: rank by these importances instead of |w|
      (lowest removed first), e.g. learned keep probabilities. An array has
      the kernel's shape; for unit targeting it may also have shape
      `(cols,)`, else a column's importance is the mean of its scores.
      Scores are compared in float32.

    Args:
        model: a built `keras.Model` (TargetedDropout wrappers are looked
            through).
        fraction: float in [0, 1].
        targeting: `"weight"` or `"unit"`.
        exclude: layer name(s) or a predicate `layer -> bool`.
        exclude_logits: bool, whether to leave the logits layer unpruned.
        scope: `"local"` (per column, or per layer for units) or `"global"`.
        block_size: None or int >= 2, the M of N:M structured sparsity.
        criterion: `"magnitude"` or `"random"`.
        scores: None or `{variable path: importance array}`.
        seed: int or None, for `criterion="random"`.
        groups: bool, with `targeting="unit"`: prune whole channel groups
            of the channel dependency graph (see
            `keras_tdrop.pruning.group_masks`), so that `shrink` can remove
            every zeroed channel. Needs a functional or Sequential model.
        round_to: None or int, with `groups=True`: each group keeps a
            multiple of this many channels (e.g. 8 for XNNPACK).
        importance: with `groups=True`, how channels are ranked:
            `"magnitude"` (the summed L2 norms of the channel's kernel
            slices) or `"bn_scale"` (the summed |gamma| of its
            BatchNormalization layers, Network Slimming's criterion; a
            model with none is refused). See `group_masks`.

    Example:
    >>> masks = compute_masks(model, 0.8)
    >>> {path: m.mean() for path, m in masks.items()}  # ~0.2 each
    >>> global_masks = compute_masks(model, 0.8, scope="global")
    >>> two_four = compute_masks(model, 0.5, block_size=4)
    """
    targeting_lib.check_rate("fraction", fraction)
    targeting_lib.check_targeting(targeting)
    if importance != "magnitude":
        from keras_tdrop.pruning.group_masks import check_importance

        check_importance(importance)
        if groups is not True:
            raise ValueError(
                "`importance` ranks the channels of channel groups: it "
                f"needs groups=True. Received: importance={importance!r}, "
                f"groups={groups!r}"
            )
    if groups is not False:
        return _group_masks(
            model,
            fraction,
            targeting,
            exclude,
            exclude_logits,
            scope,
            block_size,
            criterion,
            scores,
            groups,
            round_to,
            importance,
        )
    if round_to is not None:
        raise ValueError(
            "`round_to` rounds channel groups: it needs groups=True. "
            f"Received: round_to={round_to!r}"
        )
    kernels = prunable_kernels(model, exclude, exclude_logits)
    check_options(kernels, targeting, scope, block_size, criterion, scores)
    if not kernels:
        return {}
    if criterion == "magnitude" and scores is None:
        check_finite({k.path: k.value for k in kernels}, "kernel")
    if block_size is not None:
        count = int(np.floor(fraction * block_size * (1.0 + 2.0**-20)))
        return block_masks(kernels, count, block_size, criterion, scores, seed)
    if criterion == "magnitude" and scores is None and scope == "local":
        masks = {}
        for kernel in kernels:
            pruned = targeting_lib.targeted_mask(
                kernel.value, fraction, targeting
            )
            masks[kernel.path] = keep_mask(pruned, kernel.dtype)
        return masks
    values = kernel_importances(kernels, targeting, criterion, scores, seed)
    if scope == "global":
        flat = np.concatenate([v.reshape(-1) for v in values])
        pruned = lowest_entries(flat.reshape(-1, 1), fraction).reshape(-1)
        sizes = np.cumsum([v.size for v in values])[:-1]
        chosen = [
            p.reshape(v.shape) for p, v in zip(np.split(pruned, sizes), values)
        ]
    else:
        chosen = [lowest_entries(v, fraction) for v in values]
    masks = {}
    for kernel, pruned in zip(kernels, chosen):
        rows, cols = targeting_lib.matrix_shape(kernel.shape)
        if targeting == "unit":
            pruned = np.broadcast_to(pruned.reshape(1, cols), (rows, cols))
        masks[kernel.path] = keep_mask(
            pruned.reshape(kernel.shape), kernel.dtype
        )
    return masks


def _group_masks(
    model,
    fraction,
    targeting,
    exclude,
    exclude_logits,
    scope,
    block_size,
    criterion,
    scores,
    groups,
    round_to,
    importance,
):
    from keras_tdrop.pruning.group_masks import group_masks

    check_model(model, built_for="pruning")
    if groups is not True:
        raise TypeError(f"`groups` must be a bool. Received: groups={groups!r}")
    _check_unwrapped(model)
    if targeting != "unit":
        raise ValueError(
            "`groups=True` prunes whole channels: it needs "
            f'targeting="unit". Received: targeting={targeting!r}'
        )
    if scope not in SCOPES:
        raise ValueError(
            f"`scope` must be one of {SCOPES}. Received: scope={scope!r}"
        )
    unsupported = {
        "block_size": (block_size, None),
        "criterion": (criterion, "magnitude"),
        "scores": (scores, None),
    }
    for name, (value, default) in unsupported.items():
        if value != default:
            raise ValueError(
                f"`{name}` is not supported with groups=True. "
                f"Received: {name}={value!r}"
            )
    try:
        keras_adapter.functional_of(model)
    except keras_adapter.GraphError as error:
        raise ValueError(
            f"groups=True needs the channel graph of a functional or "
            f"Sequential model. {error} On it, use per-layer unit masks "
            "(groups=False)."
        ) from None
    masks = group_masks(
        model,
        fraction,
        scope,
        exclude,
        exclude_logits,
        round_to,
        importance=importance,
    )
    if not masks:
        _warn_if_nothing_prunable(model, exclude, exclude_logits)
    return masks


def _warn_if_nothing_prunable(model, exclude, exclude_logits):
    """Warns, with the graph's reasons, where no channel group of `model`
    can be pruned (so that `{}` is never a silent answer)."""
    from keras_tdrop.channels import channel_graph
    from keras_tdrop.channels.groups import blocked_summary
    from keras_tdrop.channels.groups import prunable_groups

    graph = channel_graph(model)
    if prunable_groups(graph, model, exclude, exclude_logits):
        return
    warnings.warn(
        f"compute_masks(groups=True): no channel group of model "
        f"'{model.name}' can be pruned, so no mask is returned. "
        f"{blocked_summary(graph)}, or use per-layer unit masks "
        "(groups=False).",
        UserWarning,
        stacklevel=4,
    )


def _check_unwrapped(model):
    """Refuses a model still in the package's training wrappers: the
    channel graph sees a wrapper as an unknown layer and would prune
    nothing."""
    from keras_tdrop.layers.kernel_wrapper import kernel_wrappers
    from keras_tdrop.layers.model_targeted_dropout import ModelTargetedDropout

    if isinstance(model, ModelTargetedDropout):
        raise ValueError(
            "compute_masks(..., groups=True) needs the trained network, not "
            "its ModelTargetedDropout: pass `model.model`. Received: "
            f"model=ModelTargetedDropout '{model.name}'"
        )
    wrapped = kernel_wrappers(model)
    if wrapped:
        names = ", ".join(f"'{w.name}' ({type(w).__name__})" for w in wrapped)
        raise ValueError(
            "compute_masks(..., groups=True) needs the plain network: model "
            f"'{model.name}' still holds training wrappers ({names}), which "
            "the channel graph cannot see through. Strip them first: "
            "`strip_targeted_dropout(model)` (or `strip_wrappers`)."
        )


def nm_masks(
    model,
    n=2,
    m=4,
    exclude=None,
    exclude_logits=True,
    criterion="magnitude",
    scores=None,
    seed=None,
):
    """N:M structured masks: at most `n` of every `m` consecutive weights
    along the input axis kept (2:4 by default), TF-MOT's `sparsity_m_by_n`
    pattern with `(m - n, m)`. See `compute_masks(block_size=m)`.

    Example:
    >>> masks = nm_masks(model, 2, 4)  # 50% of every kernel, 2 per block
    """
    for name, value in (("n", n), ("m", m)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(
                f"`{name}` must be a positive int. Received: {name}={value!r}"
            )
    if n > m or m < 2:
        raise ValueError(
            f"`n` must be <= `m` and `m` >= 2. Received: n={n}, m={m}"
        )
    kernels = prunable_kernels(model, exclude, exclude_logits)
    check_options(kernels, "weight", "local", m, criterion, scores)
    if criterion == "magnitude" and scores is None:
        check_finite({k.path: k.value for k in kernels}, "kernel")
    return block_masks(kernels, m - n, m, criterion, scores, seed)


def prune(
    model,
    fraction,
    targeting="weight",
    exclude=None,
    exclude_logits=True,
    inplace=False,
):
    """Returns a copy of `model` pruned at `fraction` (see `compute_masks`).

    Example:
    >>> pruned = prune(model, 0.9, targeting="weight")
    """
    check_inplace(inplace)
    masks = compute_masks(model, fraction, targeting, exclude, exclude_logits)
    return apply_masks(model, masks, inplace=inplace)
