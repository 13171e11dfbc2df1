"""The reporting arguments that `prune_sweep` and `sweep_models` took
before they only computed: deprecated, and done here by the report
functions that replace them (delete this file to remove them)."""

import warnings

from keras_tdrop.pruning.plots import XLABELS
from keras_tdrop.pruning.plots import plot_sweeps
from keras_tdrop.pruning.report import measured
from keras_tdrop.pruning.report import write_csv
from keras_tdrop.pruning.tables import compare_sweeps
from keras_tdrop.pruning.tables import format_sweep

__all__ = ["legacy_arguments", "report_models", "report_sweep"]

_PRINT = "`progress=print_progress`, then `print(format_sweep(rows))`"
# {function: {argument: (old default, what to call instead)}}
_LEGACY = {
    "prune_sweep": {
        "verbose": (1, _PRINT),
        "csv_path": (None, "`write_csv(rows, csv_path)`"),
        "plot_path": (None, "`plot_sweeps({name: rows}, plot_path)`"),
        "name": (None, "`plot_sweeps({name: rows}, plot_path)`"),
    },
    "sweep_models": {
        "metric": ("accuracy", "the `metric` of the calls below"),
        "csv_path": (
            None,
            "`write_csv(compare_sweeps(sweeps, metric), csv_path)`",
        ),
        "plot_path": (None, "`plot_sweeps(sweeps, plot_path, title=title)`"),
        "title": (None, "`plot_sweeps(sweeps, plot_path, title=title)`"),
        "verbose": (
            1,
            "`progress=print_progress`, then "
            "`print(format_sweep(sweeps, metric))`",
        ),
    },
}


def legacy_arguments(function, given):
    """The old reporting arguments of `function` found in `given`, popped
    from it and completed with their old defaults, after a
    DeprecationWarning that names what to call instead; {} if none."""
    legacy = _LEGACY[function]
    found = {k: given.pop(k) for k in list(given) if k in legacy}
    if not found:
        return {}
    instead = "; ".join(dict.fromkeys(legacy[k][1] for k in found))
    warnings.warn(
        f"`{function}({', '.join(f'{k}=...' for k in found)})` is "
        f"deprecated and will be removed: `{function}` computes and returns "
        "the rows, and the functions of `keras_tdrop.pruning` report them: "
        f"{instead}.",
        DeprecationWarning,
        stacklevel=3,
    )
    return {k: found.get(k, default) for k, (default, _) in legacy.items()}


def report_sweep(rows, name, targeting, verbose, csv_path, plot_path):
    """What `prune_sweep(verbose=1, csv_path=..., plot_path=...)` did once
    its rows were measured."""
    if verbose:
        print(format_sweep(rows), flush=True)
    if csv_path is not None:
        write_csv(rows, csv_path)
    if plot_path is not None:
        metrics = measured(rows[0])
        plot_sweeps(
            {name: rows},
            plot_path,
            metric="accuracy" if "accuracy" in metrics else metrics[-1],
            xlabel=XLABELS[targeting],
        )


def report_models(
    sweeps, targeting, metric, csv_path, plot_path, title, verbose
):
    """What `sweep_models(metric=..., csv_path=..., plot_path=...,
    title=..., verbose=1)` did once every model was swept."""
    for rows in sweeps.values():
        if metric not in rows[0]:
            raise ValueError(
                f"`metric` must be one of the evaluated values "
                f"{sorted(rows[0])}. Received: metric={metric!r}"
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
