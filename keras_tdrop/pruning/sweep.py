"""Accuracy against prune fraction, from the unpruned weights every time."""

import warnings

import keras
import numpy as np

from keras_tdrop import targeting as targeting_lib
from keras_tdrop.pruning.masks import apply_masks
from keras_tdrop.pruning.masks import check_options
from keras_tdrop.pruning.masks import compute_masks
from keras_tdrop.pruning.masks import copy_model
from keras_tdrop.pruning.masks import prunable_kernels
from keras_tdrop.pruning.recalibrate import batchnorm_layers
from keras_tdrop.pruning.recalibrate import check_batches
from keras_tdrop.pruning.recalibrate import read_batches
from keras_tdrop.pruning.recalibrate import recalibrate as recalibrate_in_place
from keras_tdrop.pruning.recalibrate import restore_statistics
from keras_tdrop.pruning.recalibrate import statistics
from keras_tdrop.pruning.report import compare_sweeps
from keras_tdrop.pruning.report import compression
from keras_tdrop.pruning.report import flops_or_none
from keras_tdrop.pruning.report import format_sweep
from keras_tdrop.pruning.report import plot_sweeps
from keras_tdrop.pruning.report import write_csv

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


XLABELS = {
    "weight": "pruned weights per column (%)",
    "unit": "pruned units per layer (%)",
}


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
    scope="local",
    block_size=None,
    criterion="magnitude",
    scores=None,
    seed=None,
    recalibrate=None,
    csv_path=None,
    plot_path=None,
    name=None,
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
        verbose: 1 prints a progress line per fraction and the table at the
            end, 0 nothing.
        csv_path: optional path of a CSV file for the rows.
        plot_path: optional path of a PNG plot (needs matplotlib).
        name: the model's label in the plot (default: its name).

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
    >>> [round(r["accuracy"], 3) for r in rows]
    """
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
    batches = None
    if recalibrate is not None:
        batches = read_batches(recalibrate)
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
        if saved is not None:
            restore_statistics(target, saved)
    if verbose:
        print(format_sweep(rows), flush=True)
    if csv_path is not None:
        write_csv(rows, csv_path)
    if plot_path is not None:
        plot_sweeps(
            {name or model.name: rows},
            plot_path,
            metric=_plotted_metric(rows),
            xlabel=XLABELS[targeting],
        )
    return rows


def sweep_models(
    models,
    data,
    fractions=FRACTIONS,
    targeting="weight",
    metric="accuracy",
    csv_path=None,
    plot_path=None,
    title=None,
    verbose=1,
    **kwargs,
):
    """`prune_sweep` of several models on the same data, compared.

    Prints one table with a `metric` column per model, writes it as CSV
    (`compare_sweeps`' rows) and plots one curve per model.

    Args:
        models: `{name: model}`.
        data, fractions, targeting: as in `prune_sweep`.
        metric: the value compared (a key of the sweep rows).
        csv_path, plot_path: optional output files.
        title: optional plot title.
        verbose: 1 progress lines and the table, 0 nothing.
        **kwargs: other `prune_sweep` arguments (`exclude`, `scope`, ...).

    Returns:
        `{name: rows}`.

    Example:
    >>> sweeps = sweep_models({"plain": plain, "targeted": td}, test_ds)
    """
    if not isinstance(models, dict) or not models:
        raise ValueError(
            "`models` must be a non-empty dict {name: model}. "
            f"Received: models={type(models).__name__}"
        )
    sweeps = {}
    for name, model in models.items():
        if verbose:
            print(f"Pruning {name}.", flush=True)
        sweeps[name] = prune_sweep(
            model, data, fractions, targeting, verbose=verbose, **kwargs
        )
        if metric not in sweeps[name][0]:
            raise ValueError(
                f"`metric` must be one of the evaluated values "
                f"{sorted(sweeps[name][0])}. Received: metric={metric!r}"
            )
    if verbose:
        print("\n" + format_sweep(sweeps, metric), flush=True)
    if csv_path is not None:
        write_csv(compare_sweeps(sweeps, metric), csv_path)
    if plot_path is not None:
        plot_sweeps(
            sweeps,
            plot_path,
            metric=metric,
            title=title,
            xlabel=XLABELS[targeting],
        )
    return sweeps


def _check_data(data):
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


SIZE_COLUMNS = (
    "parameters",
    "nonzero",
    "compression",
    "flops",
    "speedup",
    "recalibrated",
)


def _plotted_metric(rows):
    keys = [
        k for k in rows[0] if k not in ("fraction", "sparsity") + SIZE_COLUMNS
    ]
    return "accuracy" if "accuracy" in keys else keys[-1]


def _compiled_copy(model, metrics):
    copy = copy_model(model)
    if metrics is not None:
        copy.compile(
            loss=model.loss if model.compiled else None, metrics=list(metrics)
        )
    else:
        copy.compile_from_config(model.get_compile_config())
    return copy
