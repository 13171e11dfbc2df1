"""The Triangular Dropout paper's MNIST autoencoder experiment (section 3).

One autoencoder is trained with `TriangularDropout` on its code, then
evaluated at every code width 1..z; next to it, the same architecture trained
without it and plainly truncated, and autoencoders trained at fixed widths.
"""

import os
import time

import keras
import numpy as np

from keras_tdrop.atomic_write import atomic_path
from keras_tdrop.experiments import datasets
from keras_tdrop.experiments import models
from keras_tdrop.experiments._plots import can_plot
from keras_tdrop.layers.triangular_dropout import set_width
from keras_tdrop.pruning.plots import figure
from keras_tdrop.pruning.plots import save_png
from keras_tdrop.pruning.report import format_rows
from keras_tdrop.pruning.report import write_csv

__all__ = [
    "COLUMNS",
    "PlateauSchedule",
    "plot_losses",
    "plot_reconstructions",
    "run_autoencoder",
    "summarize",
]

COLUMNS = ("width", "loss_triangular", "loss_truncated", "loss_fixed")
HEADERS = {
    "loss_triangular": "triangular",
    "loss_truncated": "truncated",
    "loss_fixed": "fixed",
}
WHAT = "The autoencoder's plots"
FIXED_WIDTHS = (2, 4, 8, 16, 32)


class PlateauSchedule(keras.callbacks.Callback):
    """The paper's schedule: learning rate / 10 when the epoch loss has not
    fallen by `min_improvement` (relative) for `patience` epochs; training
    stops at the `decreases`-th plateau."""

    def __init__(self, patience=15, min_improvement=0.02, decreases=5):
        super().__init__()
        self.patience = patience
        self.min_improvement = min_improvement
        self.decreases = decreases

    def on_train_begin(self, logs=None):
        self.best, self.wait, self.done = np.inf, 0, 0

    def on_epoch_end(self, epoch, logs=None):
        loss = logs["loss"]
        if loss < self.best * (1 - self.min_improvement):
            self.best, self.wait = loss, 0
            return
        self.wait += 1
        if self.wait < self.patience:
            return
        self.done += 1
        self.wait, self.best = 0, loss
        if self.done >= self.decreases:
            self.model.stop_training = True
            return
        rate = self.model.optimizer.learning_rate
        rate.assign(rate * 0.1)


def _check_widths(fixed_widths, latent_dim):
    fixed = tuple(fixed_widths)
    bad = [
        w
        for w in fixed
        if isinstance(w, bool)
        or not isinstance(w, (int, np.integer))
        or not 1 <= w <= latent_dim
    ]
    if not fixed or bad or len(set(fixed)) != len(fixed):
        raise ValueError(
            "`fixed_widths` must be distinct ints in [1, latent_dim="
            f"{latent_dim}]. Received: fixed_widths={fixed_widths!r}"
        )
    return tuple(sorted(int(w) for w in fixed))


def _compile(model, learning_rate):
    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate),
        loss=keras.losses.BinaryCrossentropy(),
    )
    return model


def _copy_weights(source, target):
    for layer in source.layers:
        if layer.weights:
            target.get_layer(layer.name).set_weights(layer.get_weights())


def summarize(rows):
    """How far the truncated models are above the fixed-width ones.

    Returns `(triangular, truncated)`: the mean, over the fixed widths below
    the full width, of `loss / loss_fixed - 1` for the triangular and the
    plainly truncated model (None when there is no such width).
    """
    full = rows[-1]["width"]
    pairs = [
        r for r in rows if r["loss_fixed"] is not None and r["width"] < full
    ]
    if not pairs:
        return None, None
    return tuple(
        float(np.mean([r[key] / r["loss_fixed"] - 1 for r in pairs]))
        for key in ("loss_triangular", "loss_truncated")
    )


def plot_losses(rows, path, title="MNIST autoencoder"):
    """Reconstruction loss against code width, like the paper's Figure 2."""
    fig = figure((6, 4), WHAT)
    ax = fig.add_subplot()
    widths = [r["width"] for r in rows]
    ax.plot(
        widths,
        [r["loss_truncated"] for r in rows],
        "-",
        color="0.65",
        label="standard AE at full width, truncated",
    )
    ax.plot(
        widths,
        [r["loss_triangular"] for r in rows],
        "-",
        color="tab:red",
        label="Triangular Dropout, truncated",
    )
    fixed = [r for r in rows if r["loss_fixed"] is not None]
    ax.plot(
        [r["width"] for r in fixed],
        [r["loss_fixed"] for r in fixed],
        "o-",
        color="black",
        label="standard AEs trained at each width",
    )
    ax.set_xlabel("code width")
    ax.set_ylabel("test reconstruction loss (BCE per pixel)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    return save_png(fig, path)


def plot_reconstructions(panels, originals, widths, path):
    """A grid of reconstructions per width, like the paper's Figure 3.

    `panels` maps a title to `{width: images}`, images `(k, h, w, 1)`.
    """
    aspect = (len(widths) + 1) / len(originals)
    fig = figure((3.2 * len(panels), 3.2 * aspect + 0.6), WHAT)
    labels = [f"z={w}" for w in widths] + ["input"]
    for i, (title, by_width) in enumerate(panels.items(), start=1):
        rows = [
            np.concatenate(list(by_width[w][..., 0]), axis=1) for w in widths
        ]
        rows.append(np.concatenate(list(originals[..., 0]), axis=1))
        ax = fig.add_subplot(1, len(panels), i)
        ax.imshow(np.concatenate(rows, axis=0), cmap="gray", vmin=0, vmax=1)
        height = originals.shape[1]
        ax.set_yticks([(j + 0.5) * height for j in range(len(labels))])
        ax.set_yticklabels(labels, fontsize=7)
        ax.set_xticks([])
        ax.set_title(title, fontsize=9)
    fig.tight_layout()
    return save_png(fig, path)


def run_autoencoder(
    out_dir="autoencoder_out",
    data_dir=None,
    latent_dim=32,
    fixed_widths=FIXED_WIDTHS,
    epochs=3,
    batch_size=64,
    learning_rate=2e-3,
    train_limit=2048,
    test_limit=300,
    filters=16,
    mode="triangular",
    plateau_patience=None,
    examples=8,
    seed=0,
    verbose=1,
):
    """Trains the paper's MNIST conv autoencoder with Triangular Dropout and
    compares it, at every code width, with truncated and fixed-width ones.

    Three kinds of model, all `keras_tdrop.experiments.models.conv_autoencoder`
    trained with binary cross-entropy and Adam on the same images in the same
    order:
    one with `TriangularDropout` on its `latent_dim`-wide code; the same
    architecture without it (from the same initial weights); and one
    standard autoencoder per entry of `fixed_widths` (the one at
    `latent_dim` is the plain model). Then, on the test images, the
    reconstruction loss of the triangular model and of the plain model at
    every width 1..`latent_dim` (units >= w zeroed, which equals truncating
    to w units), and of each fixed-width model.

    Writes `autoencoder.csv` (the rows), `autoencoder.png` (loss against
    width, like the paper's Figure 2), `reconstructions.png` (test digits
    reconstructed at each fixed width by the three kinds of model, like its
    Figure 3), and the trained `triangular.keras` and `standard.keras`
    (the plain model at full width) in `out_dir`, and prints the table.

    The paper's full setting is 32 filters, the whole training set, batch
    1024, learning rate 5e-3 and its plateau schedule
    (`plateau_patience=15`, with a large `epochs`); the defaults are a short
    run for a few minutes of two CPU cores: 16 filters (a quarter of the
    compute), 2,048 training images, 3 epochs, batch 64.

    Args:
        out_dir: folder for the outputs (created if missing).
        data_dir: TFDS data directory; default `$TFDS_DATA_DIR`.
        latent_dim: int, code width of the triangular and plain models.
        fixed_widths: ints in [1, latent_dim], widths of the models trained
            at a fixed width.
        epochs: int, training epochs of each model (the most, with a
            plateau schedule).
        batch_size: int.
        learning_rate: float, Adam's initial learning rate.
        train_limit: int or None (all 60,000), training images used.
        test_limit: int or None (all 10,000), test images evaluated.
        filters: int, channels of every conv (32 in the paper; 16 by
            default here for speed).
        mode: `TriangularDropout` mode, `"triangular"` or `"random"`.
        plateau_patience: optional int; divide the learning rate by 10 when
            the epoch loss has not fallen by 2% for this many epochs, and
            stop at the fifth such plateau (the paper: 15).
        examples: int, test digits in `reconstructions.png`.
        seed: int for the initial weights, the data order and the masks.
        verbose: 0 silent, 1 progress bars and the table, 2 one line per
            epoch and the table.

    Returns:
        A list of dicts, one per width 1..`latent_dim`: `width`,
        `loss_triangular`, `loss_truncated`, and `loss_fixed` (None where no
        model was trained at that width).

    Example:
    >>> rows = run_autoencoder("ae_out", epochs=1, train_limit=1024)
    """
    fixed_widths = _check_widths(fixed_widths, latent_dim)
    if mode not in ("triangular", "random"):
        raise ValueError(
            f"`mode` must be 'triangular' or 'random'. Received: mode={mode!r}"
        )
    plotting = can_plot("the PNG files")
    say = print if verbose else (lambda *args, **kwargs: None)
    start = time.perf_counter()
    x_train, _ = datasets.load_numpy(
        "mnist", "train", data_dir=data_dir, limit=train_limit
    )
    x_test, _ = datasets.load_numpy(
        "mnist", "test", data_dir=data_dir, limit=test_limit
    )
    os.makedirs(out_dir, exist_ok=True)

    keras.utils.set_random_seed(seed)
    triangular = models.conv_autoencoder(
        latent_dim, mode=mode, filters=filters, seed=seed
    )
    plain = models.conv_autoencoder(
        latent_dim, triangular=False, filters=filters
    )
    _copy_weights(plain, triangular)
    fixed = {w: plain if w == latent_dim else None for w in fixed_widths}
    for w in fixed:
        if fixed[w] is None:
            fixed[w] = models.conv_autoencoder(
                w, triangular=False, filters=filters
            )
    runs = [(f"Triangular Dropout, z={latent_dim}", triangular)]
    runs.append((f"standard, z={latent_dim}", plain))
    runs += [
        (f"standard, z={w}", m) for w, m in fixed.items() if m is not plain
    ]

    for i, (label, model) in enumerate(runs, start=1):
        say(f"[{i}/{len(runs)}] Training {label} ({epochs} epochs).")
        keras.utils.set_random_seed(seed)
        callbacks = []
        if plateau_patience:
            callbacks.append(PlateauSchedule(plateau_patience))
        _compile(model, learning_rate).fit(
            x_train,
            x_train,
            batch_size=batch_size,
            epochs=epochs,
            shuffle=True,
            callbacks=callbacks,
            verbose=verbose,
        )

    # The plain model, masked: a copy with a TriangularDropout on the code.
    truncated = models.conv_autoencoder(latent_dim, filters=filters)
    _copy_weights(plain, truncated)
    _compile(truncated, learning_rate)
    sample = x_test[:examples]
    losses = {"triangular": {}, "truncated": {}}
    shown = {"triangular": {}, "truncated": {}}
    for w in range(1, latent_dim + 1):
        for key, model in (
            ("triangular", triangular),
            ("truncated", truncated),
        ):
            set_width(model, w)
            losses[key][w] = float(
                model.evaluate(x_test, x_test, batch_size=500, verbose=0)
            )
            if w in fixed:
                shown[key][w] = model.predict(sample, verbose=0)
        say(
            f"width {w:>3}: triangular {losses['triangular'][w]:.4f}, "
            f"truncated {losses['truncated'][w]:.4f}"
        )
    set_width(triangular, None)
    fixed_loss, fixed_shown = {}, {}
    for w, model in fixed.items():
        fixed_loss[w] = float(
            model.evaluate(x_test, x_test, batch_size=500, verbose=0)
        )
        fixed_shown[w] = model.predict(sample, verbose=0)
        say(f"fixed width {w:>3}: {fixed_loss[w]:.4f}")

    rows = [
        {
            "width": w,
            "loss_triangular": losses["triangular"][w],
            "loss_truncated": losses["truncated"][w],
            "loss_fixed": fixed_loss.get(w),
        }
        for w in range(1, latent_dim + 1)
    ]
    write_csv(rows, os.path.join(out_dir, "autoencoder.csv"), columns=COLUMNS)
    for model, name in ((triangular, "triangular"), (plain, "standard")):
        with atomic_path(os.path.join(out_dir, f"{name}.keras")) as tmp:
            model.save(tmp)
    if plotting:
        plot_losses(rows, os.path.join(out_dir, "autoencoder.png"))
        plot_reconstructions(
            {
                "A: trained at each width": fixed_shown,
                f"B: standard z={latent_dim}, truncated": shown["truncated"],
                f"E: Triangular z={latent_dim}, truncated": shown["triangular"],
            },
            sample,
            list(fixed),
            os.path.join(out_dir, "reconstructions.png"),
        )
    say("")
    say(
        format_rows(
            rows,
            headers=HEADERS,
            widths=dict.fromkeys(HEADERS, 10),
            label=False,
        )
    )
    above_triangular, above_truncated = summarize(rows)
    if above_triangular is not None:
        say(
            "Loss above the models trained at each width below "
            f"{latent_dim}, on average: triangular "
            f"{above_triangular:+.1%}, plainly truncated "
            f"{above_truncated:+.1%}."
        )
    say(
        f"\nWrote {os.path.join(out_dir, 'autoencoder.csv')}"
        + (", autoencoder.png and reconstructions.png" if plotting else "")
        + f" ({time.perf_counter() - start:.0f} s)."
    )
    return rows
