"""`keras-tdrop analyze RUN ...`: the paper's Table 1 and Figure 1 for
trained runs (the toy networks: `toy_none`, `toy_targeted`)."""

import json
import os

import keras
import numpy as np

from keras_tdrop.atomic_write import atomic_path
from keras_tdrop.experiments import analysis
from keras_tdrop.experiments import datasets
from keras_tdrop.pruning.masks import compute_masks
from keras_tdrop.pruning.masks import prune
from keras_tdrop.pruning.report import format_rows
from keras_tdrop.pruning.report import write_csv

__all__ = ["COLUMNS", "analyze"]

COLUMNS = (
    "run",
    "estimate",
    "measured",
    "gradient_term",
    "hessian_term",
    "loss",
    "accuracy",
    "pruned_accuracy",
)
# Table 1's columns and their titles.
TABLE1 = {
    "run": "run",
    "estimate": "|dE| Eq.3",
    "measured": "measured",
    "gradient_term": "-g.d",
    "hessian_term": "d`Hd/2",
    "accuracy": "acc",
    "pruned_accuracy": "acc pruned",
}


def _load(run_dir, data_dir):
    with open(os.path.join(run_dir, "config.json")) as f:
        config = json.load(f)
    model = keras.saving.load_model(
        os.path.join(run_dir, "model.keras"), compile=False
    )
    model.compile(
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    test = datasets.load(
        config["data"],
        "test",
        batch_size=1000,
        data_dir=data_dir,
        limit=config["test_limit"],
        standardize=config["recipe"]["standardize"],
    )
    return config, model, test


def _block(model, masks, size, seed):
    """A block of `size` weights of the first prunable kernel's first
    column, and how many of them are kept by `masks`."""
    path = next(iter(masks))
    variable = {v.path: v for v in model.variables}[path]
    rows = int(np.prod(variable.shape[:-1]))
    cols = int(variable.shape[-1])
    rng = np.random.default_rng(seed)
    picked = np.sort(rng.choice(rows, min(size, rows), replace=False))
    indices = picked * cols  # column 0 of the [rows, cols] view
    kept = int(masks[path].reshape(-1)[indices].sum())
    return path, indices, kept


def analyze(
    run_dirs,
    fraction=0.75,
    out=None,
    block_size=200,
    data_dir=None,
    seed=0,
    verbose=1,
):
    """Eq. 3 and Figure 1 for each run: prune `fraction` of the weights of
    every prunable kernel (lowest |w| per column) and report the estimated
    loss change |-g.d + 1/2 d'Hd| over the run's test set next to the
    measured one and the accuracy before and after pruning.

    Args:
        run_dirs: finished run folders.
        fraction: the prune fraction (the paper: gamma = 0.75).
        out: optional folder for `table1.csv` and `figure1.png`
            (theta*H*theta of `block_size` weights of the first pruned
            column, kept weights first).
        block_size: int, weights in Figure 1's block.
        data_dir: TFDS data directory.
        seed: int choosing the block's weights.
        verbose: 0 prints nothing.

    Returns:
        A list of dicts with the keys of `COLUMNS`.

    Example:
    >>> analyze(["runs/toy_none", "runs/toy_targeted"], out="runs/table1")
    """
    if isinstance(run_dirs, str) or not run_dirs:
        raise ValueError(
            "`run_dirs` must be a non-empty list of run folders. "
            f"Received: run_dirs={run_dirs!r}"
        )
    rows, matrices, kept_counts, titles = [], [], [], []
    for run_dir in run_dirs:
        config, model, test = _load(run_dir, data_dir)
        exclude = config["exclude"]
        if verbose:
            print(f"{run_dir}: Hessian-vector products over the test set.")
        deltas = analysis.pruning_delta(model, fraction, exclude=exclude)
        change = analysis.loss_change(model, test, deltas)
        pruned = prune(model, fraction, exclude=exclude)
        pruned.compile(loss=model.loss, metrics=["accuracy"])
        row = {
            "run": config["experiment"],
            **change,
            "accuracy": model.evaluate(test, verbose=0, return_dict=True)[
                "accuracy"
            ],
            "pruned_accuracy": pruned.evaluate(
                test, verbose=0, return_dict=True
            )["accuracy"],
        }
        rows.append(row)
        if out is not None and block_size:
            masks = compute_masks(model, fraction, exclude=exclude)
            path, indices, kept = _block(model, masks, block_size, seed)
            matrix, _ = analysis.theta_h_theta(model, test, path, indices)
            matrices.append(matrix)
            kept_counts.append(kept)
            titles.append(
                f"{config['experiment']}: {len(indices)} weights of "
                f"{path}[:, 0]\nkept {kept} first; pruned block sum "
                f"{matrix[kept:, kept:].sum():.3g}"
            )
    if verbose:
        print(_table1(rows, fraction))
    if out is not None:
        os.makedirs(out, exist_ok=True)
        write_csv(
            rows,
            os.path.join(out, "table1.csv"),
            columns=COLUMNS,
            float_format=".6g",
        )
        if matrices:
            with atomic_path(os.path.join(out, "figure1.png")) as tmp:
                analysis.plot_theta_h_theta(
                    matrices, tmp, kept=kept_counts, titles=titles
                )
        if verbose:
            print(f"Wrote {out}/table1.csv and figure1.png.")
    return rows


def _table1(rows, fraction):
    """Table 1 as text: |dE| (Eq. 3), the measured change, accuracies."""
    percent = ("accuracy", "pruned_accuracy")
    return format_rows(
        [r | {k: f"{r[k] * 100:.2f}%" for k in percent} for r in rows],
        columns=list(TABLE1),
        headers=TABLE1 | {"pruned_accuracy": f"acc {fraction:.0%} pruned"},
        widths={"run": 14, "accuracy": 7, "pruned_accuracy": 16}
        | dict.fromkeys(COLUMNS[1:5], 10),
        gap=" ",
        rule=False,
    )
