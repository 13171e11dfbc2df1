"""Post hoc pruning masks, chosen by the targeting functions of training."""

import keras
import numpy as np
from keras import ops

from keras_tdrop import keras_adapter
from keras_tdrop import targeting as targeting_lib
from keras_tdrop.kernels import iter_layers
from keras_tdrop.kernels import kernel_variables
from keras_tdrop.kernels import logits_kernels
from keras_tdrop.kernels import resolve_exclude
from keras_tdrop.wrapping import clone_with_weights


def _check_model(model):
    if not isinstance(model, keras.Model):
        raise TypeError(
            f"`model` must be a keras.Model. Received: model={model!r}"
        )
    if not model.built:
        raise ValueError(
            f"`model` must be built before pruning. Received: unbuilt model "
            f"'{model.name}'"
        )


def prunable_kernels(model, exclude=None, exclude_logits=True):
    """The kernels pruning acts on: every kernel of every layer not excluded.

    The logits layer is excluded by default, as in the references; biases,
    normalization parameters and other non-kernel weights never are pruned.
    """
    _check_model(model)
    excluded = resolve_exclude(model, exclude, exclude_logits)
    kernels = []
    for layer in iter_layers(model):
        if excluded(layer):
            continue
        kernels.extend(kernel_variables(layer))
    if exclude_logits:
        # A subclassed model, or one in a ModelTargetedDropout, has no
        # logits layer in a graph; its logits kernel is found by running it.
        logits = {id(k) for k in logits_kernels(model)}
        kernels = [k for k in kernels if id(k) not in logits]
    return kernels


SCOPES = ("local", "global")
CRITERIA = ("magnitude", "random")


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

    Example:
    >>> masks = compute_masks(model, 0.8)
    >>> {path: m.mean() for path, m in masks.items()}  # ~0.2 each
    >>> global_masks = compute_masks(model, 0.8, scope="global")
    >>> two_four = compute_masks(model, 0.5, block_size=4)
    """
    targeting_lib.check_rate("fraction", fraction)
    targeting_lib.check_targeting(targeting)
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
        _check_finite({k.path: k.value for k in kernels}, "kernel")
    if block_size is not None:
        count = int(np.floor(fraction * block_size * (1.0 + 2.0**-20)))
        return _block_masks(kernels, count, block_size, criterion, scores, seed)
    if criterion == "magnitude" and scores is None and scope == "local":
        masks = {}
        for kernel in kernels:
            pruned = targeting_lib.targeted_mask(
                kernel.value, fraction, targeting
            )
            masks[kernel.path] = _keep(pruned, kernel.dtype)
        return masks
    values = _importances(kernels, targeting, criterion, scores, seed)
    if scope == "global":
        flat = np.concatenate([v.reshape(-1) for v in values])
        pruned = _lowest(flat.reshape(-1, 1), fraction).reshape(-1)
        sizes = np.cumsum([v.size for v in values])[:-1]
        chosen = [
            p.reshape(v.shape) for p, v in zip(np.split(pruned, sizes), values)
        ]
    else:
        chosen = [_lowest(v, fraction) for v in values]
    masks = {}
    for kernel, pruned in zip(kernels, chosen):
        rows, cols = targeting_lib.matrix_shape(kernel.shape)
        if targeting == "unit":
            pruned = np.broadcast_to(pruned.reshape(1, cols), (rows, cols))
        masks[kernel.path] = _keep(pruned.reshape(kernel.shape), kernel.dtype)
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
):
    from keras_tdrop.pruning.group_masks import group_masks

    _check_model(model)
    if groups is not True:
        raise TypeError(f"`groups` must be a bool. Received: groups={groups!r}")
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
    return group_masks(
        model, fraction, scope, exclude, exclude_logits, round_to
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
        _check_finite({k.path: k.value for k in kernels}, "kernel")
    return _block_masks(kernels, m - n, m, criterion, scores, seed)


def check_options(kernels, targeting, scope, block_size, criterion, scores):
    if scope not in SCOPES:
        raise ValueError(
            f"`scope` must be one of {SCOPES}. Received: scope={scope!r}"
        )
    if criterion not in CRITERIA:
        raise ValueError(
            f"`criterion` must be one of {CRITERIA}. "
            f"Received: criterion={criterion!r}"
        )
    if block_size is not None:
        if (
            isinstance(block_size, bool)
            or not isinstance(block_size, (int, np.integer))
            or block_size < 2
        ):
            raise ValueError(
                "`block_size` must be None or an int >= 2. "
                f"Received: block_size={block_size!r}"
            )
        if targeting != "weight" or scope != "local":
            raise ValueError(
                "`block_size` (N:M structure) needs targeting='weight' and "
                f"scope='local'. Received: targeting={targeting!r}, "
                f"scope={scope!r}"
            )
    if scores is None:
        return
    if criterion != "magnitude":
        raise ValueError(
            "`scores` replaces the magnitude criterion; it cannot be "
            f"combined with criterion={criterion!r}"
        )
    if not isinstance(scores, dict):
        raise TypeError(
            "`scores` must be a dict of variable path -> array. "
            f"Received: scores={type(scores).__name__}"
        )
    paths = {k.path: tuple(k.shape) for k in kernels}
    for path in scores:
        if path not in paths:
            raise ValueError(
                f"`scores` names a variable that is not a prunable kernel. "
                f"Received: path={path!r}"
            )
    _check_finite(scores, "scores for")
    for path, shape in paths.items():
        if path not in scores:
            raise ValueError(
                f"`scores` has no entry for the prunable kernel {path!r}; "
                "give one for every kernel, or exclude its layer."
            )
        got = tuple(np.shape(scores[path]))
        unit_ok = targeting == "unit" and got == (shape[-1],)
        if got != shape and not unit_ok:
            raise ValueError(
                f"The scores for {path!r} have shape {got}, the kernel has "
                f"{shape}."
            )


def _check_finite(arrays, what):
    for path, value in arrays.items():
        if not np.all(np.isfinite(ops.convert_to_numpy(value))):
            raise ValueError(
                f"The {what} {path!r} has non-finite values (NaN or Inf), "
                "which cannot be ranked. Received: "
                f"{what} {path!r} with NaN or Inf"
            )


def _importances(kernels, targeting, criterion, scores, seed):
    """Per kernel, non-negative importances (lowest pruned first): a matrix
    `[rows, cols]` for weight targeting, `[cols, 1]` for unit targeting."""
    rng = np.random.default_rng(seed)
    values = []
    for kernel in kernels:
        rows, cols = targeting_lib.matrix_shape(kernel.shape)
        if criterion == "random":
            value = rng.random(rows * cols if targeting == "weight" else cols)
        elif scores is not None:
            value = np.asarray(scores[kernel.path], "float64")
            if targeting == "unit" and value.shape != (cols,):
                value = value.reshape(rows, cols).mean(axis=0)
        else:
            value = ops.convert_to_numpy(kernel.value).astype("float64")
            value = value.reshape(rows, cols)
            if targeting == "weight":
                value = np.abs(value)
            else:
                value = np.sqrt(np.square(value).sum(axis=0))
        shape = (rows, cols) if targeting == "weight" else (cols, 1)
        values.append(np.reshape(value, shape))
    if scores is not None:
        # Importances may be negative (e.g. -log alpha); the targeting
        # functions rank |value|, so shift them all by one offset.
        low = min(v.min() for v in values)
        values = [v - low for v in values]
    return values


def _lowest(values, fraction):
    """Boolean mask of the floor(fraction * rows) lowest entries of each
    column of a non-negative matrix, by the targeting functions."""
    pruned = targeting_lib.targeted_mask(
        ops.convert_to_tensor(values.astype("float32")), fraction, "weight"
    )
    return ops.convert_to_numpy(pruned)


def _block_masks(kernels, count, block_size, criterion, scores, seed):
    rng = np.random.default_rng(seed)
    masks = {}
    for kernel in kernels:
        shape = tuple(kernel.shape)
        if criterion == "random":
            value = rng.random(shape)
        elif scores is not None:
            value = np.asarray(scores[kernel.path], "float64")
            value = value - value.min()
        else:
            value = np.abs(ops.convert_to_numpy(kernel.value))
        masks[kernel.path] = _keep(
            _block_lowest(value, count, block_size), kernel.dtype
        )
    return masks


def _block_lowest(value, count, block_size):
    """`count` lowest of every `block_size` consecutive entries along the
    input axis (-2; the only axis of a rank-1 kernel). A short last block is
    padded in front with zeros that count as removed, as TF-MOT pads."""
    matrix = (
        value.reshape(1, -1) if value.ndim == 1 else np.moveaxis(value, -1, 0)
    )
    lanes = matrix.reshape(-1, matrix.shape[-1])  # [lanes, inputs]
    inputs = lanes.shape[1]
    pad = -inputs % block_size
    padded = np.concatenate([lanes, np.zeros((lanes.shape[0], pad))], axis=1)
    blocks = padded.reshape(lanes.shape[0], -1, block_size)
    if pad:
        # Pads first in the last block, so that ties at zero take them.
        blocks[:, -1] = np.roll(blocks[:, -1], pad, axis=-1)
    columns = blocks.reshape(-1, block_size).T  # [block_size, blocks]
    pruned = targeting_lib.targeted_mask(
        ops.convert_to_tensor(columns.astype("float32")),
        None,
        "weight",
        count=count,
    )
    pruned = ops.convert_to_numpy(pruned).T.reshape(blocks.shape)
    if pad:
        pruned[:, -1] = np.roll(pruned[:, -1], -pad, axis=-1)
    pruned = pruned.reshape(lanes.shape[0], -1)[:, :inputs]
    if value.ndim == 1:
        return pruned.reshape(value.shape)
    pruned = pruned.reshape(matrix.shape)
    return np.moveaxis(pruned, 0, -1)


def _keep(pruned, dtype):
    return 1 - np.asarray(ops.convert_to_numpy(pruned)).astype(dtype)


def apply_masks(model, masks, inplace=False):
    """Multiplies each kernel named in `masks` by its mask.

    Returns a pruned copy of `model` (the caller's model is unchanged) unless
    `inplace=True`. Every path in `masks` must name a variable of the model
    with the mask's shape; nothing is changed otherwise.
    """
    _check_model(model)
    if not isinstance(masks, dict):
        raise TypeError(
            f"`masks` must be a dict of variable path -> array. "
            f"Received: masks={type(masks).__name__}"
        )
    variables = {v.path: v for v in model.variables}
    for path, mask in masks.items():
        if path not in variables:
            raise ValueError(
                f"`masks` names a variable the model does not have. "
                f"Received: path={path!r}"
            )
        if tuple(np.shape(mask)) != tuple(variables[path].shape):
            raise ValueError(
                f"The mask for {path!r} has shape {np.shape(mask)}, the "
                f"variable has {tuple(variables[path].shape)}."
            )
    target = model if inplace else _copy(model)
    if not inplace:
        paths = [v.path for v in model.variables]
        variables = dict(zip(paths, target.variables))
    for path, mask in masks.items():
        variable = variables[path]
        value = ops.convert_to_numpy(variable.value)
        variable.assign(value * np.asarray(mask, dtype=value.dtype))
    return target


def copy_model(model):
    """A copy of `model` with its weights, graph or subclassed.

    A Sequential or functional model is cloned layer by layer; any other
    model is rebuilt from its config (its `get_config`) and given the
    weights by position.
    """
    if isinstance(model, keras.Sequential) or keras_adapter.is_graph_model(
        model
    ):
        return clone_with_weights(model)
    try:
        copy = keras.saving.deserialize_keras_object(
            keras.saving.serialize_keras_object(model)
        )
    except (NotImplementedError, TypeError, ValueError) as error:
        raise ValueError(
            f"Cannot copy model '{model.name}' ({type(model).__name__}): "
            "it does not rebuild from its config. Work on it in place "
            f"(inplace=True). Received error: {error}"
        ) from error
    copy.set_weights(model.get_weights())
    return copy


def _copy(model):
    # Variables correspond by position; seed generators of the copy get new
    # paths (seed_generator_1/...), so the paths themselves may differ.
    copy = copy_model(model)
    original = [tuple(v.shape) for v in model.variables]
    copied = [tuple(v.shape) for v in copy.variables]
    if original != copied:
        raise RuntimeError(
            "The copy of the model does not name its variables as the "
            "original does; prune it in place with inplace=True."
        )
    return copy


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
    masks = compute_masks(model, fraction, targeting, exclude, exclude_logits)
    return apply_masks(model, masks, inplace=inplace)
