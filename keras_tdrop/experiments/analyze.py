"""`keras-tdrop analyze RUN ...`: the paper's Table 1 and Figure 1 for
trained runs (the toy networks: `toy_none`, `toy_targeted`)."""

import csv
import json
import os

import keras
import numpy as np

from keras_tdrop import analysis
from keras_tdrop import datasets
from keras_tdrop.pruning.masks import compute_masks
from keras_tdrop.pruning.masks import prune

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
    table = format_table(rows, fraction)
    if verbose:
        print(table)
    if out is not None:
        os.makedirs(out, exist_ok=True)
        with open(os.path.join(out, "table1.csv"), "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=COLUMNS)
            writer.writeheader()
            for row in rows:
                writer.writerow(
                    {
                        k: row[k] if k == "run" else f"{row[k]:.6g}"
                        for k in COLUMNS
                    }
                )
        if matrices:
            analysis.plot_theta_h_theta(
                matrices,
                os.path.join(out, "figure1.png"),
                kept=kept_counts,
                titles=titles,
            )
        if verbose:
            print(f"Wrote {out}/table1.csv and figure1.png.")
    return rows


def format_table(rows, fraction):
    """Table 1 as text: |dE| (Eq. 3), the measured change, accuracies."""
    lines = [
        f"{'run':<14} {'|dE| Eq.3':>10} {'measured':>10} {'-g.d':>10} "
        f"{'d`Hd/2':>10} {'acc':>7} {f'acc {fraction:.0%} pruned':>16}",
    ]
    for r in rows:
        lines.append(
            f"{r['run']:<14} {r['estimate']:>10.4f} {r['measured']:>10.4f} "
            f"{r['gradient_term']:>10.4f} {r['hessian_term']:>10.4f} "
            f"{r['accuracy'] * 100:>6.2f}% {r['pruned_accuracy'] * 100:>15.2f}%"
        )
    return "\n".join(lines)
