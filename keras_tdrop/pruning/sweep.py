"""Accuracy against prune fraction, from the unpruned weights every time."""

import keras
import numpy as np

from keras_tdrop import targeting as targeting_lib
from keras_tdrop.pruning.masks import apply_masks
from keras_tdrop.pruning.masks import compute_masks
from keras_tdrop.pruning.masks import prunable_kernels
from keras_tdrop.wrapping import clone_with_weights

FRACTIONS = (0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)


def check_fractions(fractions):
    """A tuple of floats in [0, 1], or a ValueError naming `fractions`."""
    try:
        values = tuple(float(f) for f in fractions)
    except (TypeError, ValueError):
        values = ()
    if not values or any(not 0.0 <= f <= 1.0 for f in values):
        raise ValueError(
            "`fractions` must be a non-empty sequence of floats in [0, 1]. "
            f"Received: fractions={fractions!r}"
        )
    return values


def prune_sweep(
    model,
    data,
    fractions=FRACTIONS,
    targeting="weight",
    metrics=None,
    exclude=None,
    exclude_logits=True,
    inplace=False,
    verbose=1,
):
    """Evaluates `model` pruned at each fraction (see `compute_masks`).

    Every fraction starts from the unpruned weights. The pruned weights are
    assigned into one compiled copy of the model, so `evaluate` is traced
    once for the whole sweep. The caller's model is not modified unless
    `inplace=True` (then it is evaluated and left with its unpruned
    weights restored).

    Args:
        model: a built `keras.Model`; compiled, or give `metrics`.
        data: what `model.evaluate` accepts as `x` (a `tf.data.Dataset`
            or a PyDataset of `(x, y)`), or an `(x, y)` tuple of arrays.
        fractions: prune fractions in [0, 1].
        targeting: `"weight"` or `"unit"`.
        metrics: optional list of metrics to compile the copy with
            (default: the model's own compile configuration).
        exclude, exclude_logits: as in `compute_masks`.
        inplace: bool, evaluate the model itself instead of a copy.
        verbose: 1 prints a progress line per fraction, 0 nothing.

    Returns:
        A list of dicts, one per fraction: `fraction`, `sparsity` (the share
        of prunable kernel weights removed) and every value `evaluate`
        returns (`loss`, `accuracy`, ...).

    Example:
    >>> rows = prune_sweep(model, test_ds, fractions=(0.0, 0.5, 0.9))
    >>> [round(r["accuracy"], 3) for r in rows]
    """
    fractions = check_fractions(fractions)
    targeting_lib.check_targeting(targeting)
    if metrics is None and not model.compiled:
        raise ValueError(
            "`prune_sweep` needs a compiled model or `metrics`. Received: "
            f"an uncompiled model '{model.name}' and metrics=None"
        )
    target = model if inplace else _compiled_copy(model, metrics)
    if inplace and metrics is not None:
        target.compile(loss=model.loss, metrics=list(metrics))
    kernels = prunable_kernels(target, exclude, exclude_logits)
    unpruned = [keras.ops.convert_to_numpy(k.value) for k in kernels]
    if isinstance(data, tuple) and len(data) == 2:
        x, y = data
    else:
        x, y = data, None
    rows = []
    try:
        for i, fraction in enumerate(fractions, start=1):
            for kernel, value in zip(kernels, unpruned):
                kernel.assign(value)
            masks = compute_masks(
                target, fraction, targeting, exclude, exclude_logits
            )
            apply_masks(target, masks, inplace=True)
            total = sum(m.size for m in masks.values())
            removed = total - sum(np.count_nonzero(m) for m in masks.values())
            results = target.evaluate(x, y, verbose=0, return_dict=True)
            row = {
                "fraction": fraction,
                "sparsity": float(removed / max(total, 1)),
            }
            row.update({k: float(v) for k, v in results.items()})
            rows.append(row)
            if verbose:
                shown = ", ".join(f"{k} {v:.4f}" for k, v in results.items())
                print(
                    f"[{i}/{len(fractions)}] pruned {fraction:.0%} "
                    f"(sparsity {row['sparsity']:.4f}): {shown}",
                    flush=True,
                )
    finally:
        for kernel, value in zip(kernels, unpruned):
            kernel.assign(value)
    return rows


def _compiled_copy(model, metrics):
    copy = clone_with_weights(model)
    if metrics is not None:
        copy.compile(
            loss=model.loss if model.compiled else None, metrics=list(metrics)
        )
    else:
        copy.compile_from_config(model.get_compile_config())
    return copy
