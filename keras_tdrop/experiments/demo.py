"""The demo: plain vs targeted dropout training, then a pruning sweep."""

import os
import time

import keras

from keras_tdrop.callbacks.ramping import RampingCallback
from keras_tdrop.experiments import datasets
from keras_tdrop.experiments import models
from keras_tdrop.experiments._plots import can_plot
from keras_tdrop.pruning.report import compare_sweeps
from keras_tdrop.pruning.report import format_sweep
from keras_tdrop.pruning.report import plot_sweeps
from keras_tdrop.pruning.report import print_progress
from keras_tdrop.pruning.report import write_csv
from keras_tdrop.pruning.sweep import FRACTIONS
from keras_tdrop.pruning.sweep import check_fractions
from keras_tdrop.pruning.sweep import prune_sweep
from keras_tdrop.wrapping import apply_targeted_dropout
from keras_tdrop.wrapping import strip_targeted_dropout

__all__ = ["COLUMNS", "run_demo"]

COLUMNS = ("prune_fraction", "sparsity", "accuracy_plain", "accuracy_targeted")
EXCLUDE = ("stem",)


def _compile(model, learning_rate=1e-3):
    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    return model


def run_demo(
    out_dir="demo_out",
    data_dir=None,
    epochs=3,
    batch_size=128,
    train_limit=None,
    test_limit=None,
    fractions=FRACTIONS,
    rate=0.75,
    target_rate=0.9,
    ramp_fraction=0.5,
    seed=0,
    verbose=1,
):
    """Trains a small MNIST CNN plainly and with targeted dropout, then
    compares how both survive magnitude pruning.

    Both models start from the same initial weights and see the same batches
    in the same order; the second is wrapped by `apply_targeted_dropout`
    (weight targeting, the stem and the logits left alone) and its alpha and
    gamma are ramped by `RampingCallback`. After training, for every prune
    fraction p both models are pruned from their trained weights (the lowest
    `floor(p * rows)` |w| per column of every kernel except the stem and the
    logits) and evaluated on the test set. The rows are printed as a table
    and written to `demo.csv`, and plotted to `demo.png` in `out_dir`.

    Args:
        out_dir: folder for `demo.csv` and `demo.png` (created if missing).
        data_dir: TFDS data directory; default `$TFDS_DATA_DIR`.
        epochs: int, training epochs of each model.
        batch_size: int.
        train_limit: optional int, train on the first examples only.
        test_limit: optional int, evaluate on the first examples only.
        fractions: prune fractions in [0, 1].
        rate: alpha, the final drop probability of targeted weights.
        target_rate: gamma, the final proportion of weights targeted.
        ramp_fraction: share of training over which alpha and gamma ramp up
            (for-ai/TD's piecewise ramp), or None for constant values.
        seed: int for the initial weights, the data order and the noise.
        verbose: 0 silent, 1 progress bars and the table, 2 one line per
            epoch and the table.

    Returns:
        A list of dicts, one per fraction, with keys `prune_fraction`,
        `sparsity` (the share of prunable kernel weights removed),
        `accuracy_plain` and `accuracy_targeted`.

    Example:
    >>> rows = run_demo("demo_out", epochs=1, train_limit=2000)
    >>> rows[-1]["accuracy_targeted"] > rows[-1]["accuracy_plain"]
    """
    fractions = check_fractions(fractions)
    plotting = can_plot("demo.png")
    say = print if verbose else (lambda *args, **kwargs: None)
    start = time.perf_counter()

    def train_data():
        return datasets.load(
            "mnist",
            "train",
            batch_size=batch_size,
            data_dir=data_dir,
            shuffle=True,
            seed=seed,
            limit=train_limit,
        )

    test = datasets.load(
        "mnist", "test", batch_size=1000, data_dir=data_dir, limit=test_limit
    )
    os.makedirs(out_dir, exist_ok=True)
    keras.utils.set_random_seed(seed)
    plain = models.mnist_cnn()
    targeted = apply_targeted_dropout(
        plain,
        rate=rate,
        target_rate=target_rate,
        targeting="weight",
        exclude=list(EXCLUDE),
        seed=seed,
    )
    callbacks = []
    if ramp_fraction is not None:
        callbacks.append(RampingCallback(ramp_fraction=ramp_fraction))

    say(f"Training the plain model ({epochs} epochs).")
    _compile(plain).fit(
        train_data(), epochs=epochs, shuffle=False, verbose=verbose
    )
    say(
        f"Training with targeted dropout (rate={rate}, "
        f"target_rate={target_rate}, ramp_fraction={ramp_fraction})."
    )
    _compile(targeted).fit(
        train_data(),
        epochs=epochs,
        shuffle=False,
        callbacks=callbacks,
        verbose=verbose,
    )
    swept = {}
    for label, model in (
        ("plain", plain),
        ("targeted", _compile(strip_targeted_dropout(targeted))),
    ):
        say(f"Pruning the {label} model.")
        swept[label] = prune_sweep(
            model,
            test,
            fractions,
            targeting="weight",
            exclude=list(EXCLUDE),
            progress=print_progress if verbose else None,
        )
        say(format_sweep(swept[label]), flush=True)
    rows = compare_sweeps(swept)

    write_csv(rows, os.path.join(out_dir, "demo.csv"))
    if plotting:
        plot_sweeps(
            {"plain": swept["plain"], "targeted dropout": swept["targeted"]},
            os.path.join(out_dir, "demo.png"),
            title="MNIST CNN, weight pruning",
            xlabel="pruned weights per column (%)",
        )
    say("")
    say(format_sweep(swept))
    say(
        f"\nWrote {os.path.join(out_dir, 'demo.csv')}"
        + (" and demo.png" if plotting else "")
        + f" ({time.perf_counter() - start:.0f} s)."
    )
    return rows
