"""Accuracy against prune fraction, from the unpruned weights every time."""

import warnings

import keras
import numpy as np

from keras_tdrop import targeting as targeting_lib
from keras_tdrop.pruning.apply import apply_masks
from keras_tdrop.pruning.apply import copy_model
from keras_tdrop.pruning.legacy_reporting import legacy_arguments
from keras_tdrop.pruning.legacy_reporting import report_models
from keras_tdrop.pruning.legacy_reporting import report_sweep
from keras_tdrop.pruning.mask_options import check_options
from keras_tdrop.pruning.masks import compute_masks
from keras_tdrop.pruning.prunable import prunable_kernels
from keras_tdrop.pruning.recalibrate import batchnorm_layers
from keras_tdrop.pruning.recalibrate import check_batches
from keras_tdrop.pruning.recalibrate import read_batches
from keras_tdrop.pruning.recalibrate import recalibrate as recalibrate_in_place
from keras_tdrop.pruning.recalibrate import restore_statistics
from keras_tdrop.pruning.recalibrate import statistics
from keras_tdrop.pruning.report import compression
from keras_tdrop.pruning.report import flops_or_none
from keras_tdrop.pruning.report import print_progress
from keras_tdrop.pruning.tables import format_sweep

__all__ = ["FRACTIONS", "check_fractions", "prune_sweep", "sweep_models"]

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
    scope="local",
    block_size=None,
    criterion="magnitude",
    scores=None,
    seed=None,
    recalibrate=None,
    progress=None,
    **deprecated,
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
        exclude, exclude_logits, scope, block_size, criterion, scores, seed:
            the masks, as in `compute_masks` (global threshold, N:M blocks,
            random pruning, importance scores). A random sweep draws one
            ranking from `seed`, so its masks are nested across fractions.
        recalibrate: optional data (what `recalibrate_batchnorm` takes:
            arrays, a `tf.data.Dataset` of a few batches, ...): at every
            fraction, once pruned, the BatchNormalization statistics are
            re-estimated on it before evaluating (see
            `recalibrate_batchnorm`), and restored after the sweep.
        inplace: bool, evaluate the model itself instead of a copy.
        progress: optional callable `progress(row, step, steps)`, called
            as each fraction's row is measured (`print_progress` prints
            a line).
        **deprecated: `verbose`, `csv_path`, `plot_path` and `name` still
            print, write and plot as they did, with a DeprecationWarning:
            report the rows with `print(format_sweep(rows))`,
            `write_csv(rows, path)` and `plot_sweeps({name: rows}, path)`.

    Returns:
        A list of dicts, one per fraction: `fraction`, `sparsity` (the share
        of prunable kernel weights that are zero once pruned, zeros the
        model already had included), every value `evaluate` returns
        (`loss`, `accuracy`, ...), then `parameters` (the model's count),
        `nonzero` (its parameters that are not 0 once pruned),
        `compression` (`parameters / nonzero`), `flops` (its
        multiply-accumulates per example, see `flops`; None for a model
        without a graph or a known input shape) and `speedup` (the dense
        model's FLOPs over the evaluated one's), and `recalibrated`
        (whether BatchNormalization statistics were re-estimated: False
        without `recalibrate` or without BatchNormalization). Masks keep
        every weight's shape, so `flops` stays the dense count and
        `speedup` is 1.0 at every fraction: the speed-up that pruning buys
        appears after `shrink` (see `sparsity_report(shrunk, dense=model)`).

    Example:
    >>> rows = prune_sweep(model, test_ds, fractions=(0.0, 0.5, 0.9))
    >>> print(format_sweep(rows))
    >>> write_csv(rows, "sweep.csv")
    """
    old = legacy_arguments("prune_sweep", deprecated)
    if deprecated:
        raise TypeError(
            "prune_sweep() got an unexpected keyword argument "
            f"{next(iter(deprecated))!r}"
        )
    if old.get("verbose") and progress is None:
        progress = print_progress
    fractions = check_fractions(fractions)
    targeting_lib.check_targeting(targeting)
    if criterion == "random" and seed is None:
        # One ranking for the whole sweep, so the masks are nested.
        seed = int(np.random.default_rng().integers(2**31))
    mask_options = dict(
        scope=scope,
        block_size=block_size,
        criterion=criterion,
        scores=scores,
        seed=seed,
    )
    check_options(
        prunable_kernels(model, exclude, exclude_logits),
        targeting,
        scope,
        block_size,
        criterion,
        scores,
    )
    _check_data(data)
    if progress is not None and not callable(progress):
        raise TypeError(
            "`progress` must be None or a callable (row, step, steps). "
            f"Received: progress={progress!r}"
        )
    batches = None
    if recalibrate is not None:
        batches = read_batches(recalibrate, name="recalibrate")
        check_batches(model, batches)
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
    # What pruning leaves alone is counted once (biases, statistics...).
    pruned_ids = {id(k) for k in kernels}
    other_nonzero = sum(
        int(np.count_nonzero(keras.ops.convert_to_numpy(v.value)))
        for v in target.weights
        if id(v) not in pruned_ids
    )
    parameters = target.count_params()
    macs = flops_or_none(model)
    recalibrated = batches is not None and bool(batchnorm_layers(target))
    if batches is not None and not recalibrated:
        warnings.warn(
            f"Model '{model.name}' has no BatchNormalization layer: "
            "`recalibrate` has nothing to do.",
            stacklevel=2,
        )
    saved = statistics(target) if recalibrated else None
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
                target,
                fraction,
                targeting,
                exclude,
                exclude_logits,
                **mask_options,
            )
            apply_masks(target, masks, inplace=True)
            if recalibrated:
                recalibrate_in_place(target, batches)
            # Zeros after pruning, those the model already had included (a
            # model saved with its targeted set pruned is sparse at 0%).
            total = sum(np.size(v) for v in unpruned)
            kept = sum(
                int(np.count_nonzero(value * masks.get(kernel.path, 1)))
                for kernel, value in zip(kernels, unpruned)
            )
            removed = total - kept
            results = target.evaluate(x, y, verbose=0, return_dict=True)
            row = {
                "fraction": fraction,
                "sparsity": float(removed / max(total, 1)),
            }
            row.update({k: float(v) for k, v in results.items()})
            row["parameters"] = parameters
            row["nonzero"] = other_nonzero + kept
            row["compression"] = compression(parameters, row["nonzero"])
            row["flops"] = macs
            row["speedup"] = None if macs is None else 1.0
            row["recalibrated"] = recalibrated
            rows.append(row)
            if progress is not None:
                progress(row, i, len(fractions))
    finally:
        for kernel, value in zip(kernels, unpruned):
            kernel.assign(value)
        if saved is not None:
            restore_statistics(target, saved)
    if old:
        old["name"] = old["name"] or model.name
        report_sweep(rows, targeting=targeting, **old)
    return rows


def sweep_models(
    models, data, fractions=FRACTIONS, targeting="weight", **kwargs
):
    """`prune_sweep` of several models on the same data.

    Args:
        models: `{name: model}`.
        data, fractions, targeting: as in `prune_sweep`.
        **kwargs: other `prune_sweep` arguments (`exclude`, `scope`,
            `progress`, ...). The deprecated `metric`, `csv_path`,
            `plot_path`, `title` and `verbose` still print, write and plot
            the comparison as they did, with a DeprecationWarning: report
            it with `print(format_sweep(sweeps, metric))`,
            `write_csv(compare_sweeps(sweeps, metric), path)` and
            `plot_sweeps(sweeps, path, metric=metric, title=title)`.

    Returns:
        `{name: rows}`.

    Example:
    >>> sweeps = sweep_models({"plain": plain, "targeted": td}, test_ds)
    >>> print(format_sweep(sweeps))
    """
    old = legacy_arguments("sweep_models", kwargs)
    if not isinstance(models, dict) or not models:
        raise ValueError(
            "`models` must be a non-empty dict {name: model}. "
            f"Received: models={type(models).__name__}"
        )
    verbose = old.get("verbose")
    if verbose:
        kwargs.setdefault("progress", print_progress)
    sweeps = {}
    for name, model in models.items():
        if verbose:
            print(f"Pruning {name}.", flush=True)
        sweeps[name] = prune_sweep(model, data, fractions, targeting, **kwargs)
        if verbose:
            print(format_sweep(sweeps[name]), flush=True)
    if old:
        report_models(sweeps, targeting, **old)
    return sweeps


def _check_data(data):
    if data is None or isinstance(data, (str, bytes, dict, int, float)):
        raise TypeError(
            "`data` must be an (x, y) tuple of arrays, a tf.data.Dataset or "
            f"a PyDataset of (x, y) batches. Received: data={data!r}"
        )
    if isinstance(data, tuple) and len(data) == 2:
        size = len(data[0]) if hasattr(data[0], "__len__") else None
    else:
        cardinality = getattr(data, "cardinality", None)
        size = int(cardinality()) if callable(cardinality) else None
    if size == 0:
        raise ValueError(
            "`data` is empty: there are no examples to evaluate. "
            "Received: data with 0 examples"
        )


def _compiled_copy(model, metrics):
    copy = copy_model(model)
    if metrics is not None:
        copy.compile(
            loss=model.loss if model.compiled else None, metrics=list(metrics)
        )
    else:
        copy.compile_from_config(model.get_compile_config())
    return copy
