"""A trained run's prune sweeps, plain and with BatchNorm recalibrated.

`sweep` writes a run folder's `sweep_{weight,unit}.csv` and `sweep.png`,
or with `recalibrate` their `_recalibrated` counterparts;
`recalibration_data` is the training data the statistics are
recalibrated on.
"""

import os

from keras_tdrop.experiments import datasets

__all__ = [
    "RECALIBRATED_FILES",
    "recalibration_data",
    "remove_recalibrated",
    "sweep",
]

RECALIBRATED_FILES = (
    "sweep_weight_recalibrated.csv",
    "sweep_unit_recalibrated.csv",
    "sweep_recalibrated.png",
)


def recalibration_data(config, data_dir, examples):
    """The first `examples` of the run's training split (at most its
    `train_limit`), preprocessed as in training but never augmented."""
    return datasets.load(
        config["data"],
        "train",
        batch_size=256,
        data_dir=data_dir,
        limit=min(examples, config["train_examples"]),
        standardize=config["recipe"]["standardize"],
    )


def remove_recalibrated(run_dir):
    """Recalibrated sweeps of an earlier sweep: stale once swept again."""
    for name in RECALIBRATED_FILES:
        path = os.path.join(run_dir, name)
        if os.path.exists(path):
            os.remove(path)


def sweep(model, test_ds, run_dir, config, verbose=1, recalibrate=None):
    """The weight and unit prune sweeps of a trained plain model, written
    as `sweep_weight.csv`, `sweep_unit.csv` and `sweep.png` in `run_dir`.

    With `recalibrate` (data, as `prune_sweep` takes it), the
    BatchNormalization statistics are recalibrated at every fraction and
    the files are `sweep_weight_recalibrated.csv`,
    `sweep_unit_recalibrated.csv` and `sweep_recalibrated.png`.
    """
    from keras_tdrop.experiments import compare
    from keras_tdrop.pruning.report import format_sweep
    from keras_tdrop.pruning.report import print_progress
    from keras_tdrop.pruning.sweep import prune_sweep

    suffix = "" if recalibrate is None else "_recalibrated"
    sweeps = {}
    for targeting in ("weight", "unit"):
        if verbose:
            what = "" if recalibrate is None else " (BatchNorm recalibrated)"
            print(f"{targeting} pruning sweep{what}:")
        rows = prune_sweep(
            model,
            test_ds,
            config["fractions"],
            targeting=targeting,
            exclude=config["exclude"],
            recalibrate=recalibrate,
            progress=print_progress if verbose else None,
        )
        if verbose:
            print(format_sweep(rows), flush=True)
        compare.write_sweep_csv(
            rows, os.path.join(run_dir, f"sweep_{targeting}{suffix}.csv")
        )
        sweeps[targeting] = rows
    compare.plot_runs(
        {config["experiment"]: sweeps},
        os.path.join(run_dir, f"sweep{suffix}.png"),
        title=f"{config['experiment']} ({config['model']}, "
        f"{config['recipe']['epochs']} epochs)"
        + ("" if recalibrate is None else ", BatchNorm recalibrated"),
    )
    return sweeps
