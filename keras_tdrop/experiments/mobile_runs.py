"""The run folders of `keras-tdrop mobile`: one method, seed and width each,
trained once (resumable), then pruned, shrunk, exported and timed.

A run folder `{out}/{method}_s{seed}` (`narrow_w{percent}_s{seed}` for a
narrow network) holds `config.json`, `backup/` while training,
`history.csv`, `model.keras` (the trained plain network), `results.json`
(one row per prune fraction) and the `.tflite` files. Running the same
command again resumes an interrupted training from its last epoch and
re-uses a finished one.
"""

import json
import math
import os
import time

import keras
import numpy as np

from keras_tdrop.atomic_write import atomic_path
from keras_tdrop.experiments import datasets
from keras_tdrop.experiments import models
from keras_tdrop.experiments.mobile_methods import DEFAULT_PARAMS
from keras_tdrop.experiments.mobile_methods import METHODS
from keras_tdrop.experiments.run_config import add_weight_decay
from keras_tdrop.experiments.train import write_json
from keras_tdrop.export import predict_tflite
from keras_tdrop.export import tflite_latency
from keras_tdrop.export import to_tflite
from keras_tdrop.pruning.flops import flops
from keras_tdrop.pruning.masks import apply_masks
from keras_tdrop.pruning.masks import compute_masks
from keras_tdrop.pruning.recalibrate import recalibrate_batchnorm
from keras_tdrop.pruning.shrink import shrink

__all__ = [
    "COLUMNS",
    "method_label",
    "SCALES",
    "evaluate_run",
    "run_name",
    "train_run",
]

LATENCY_ROUNDS = 10

# The scales: `converged` is the committed one (one plain run takes about
# an hour on one CPU core); `smoke` runs in the test suite. Every choice of
# a setting is made on `val_split`, never on the test set.
SCALES = {
    "converged": {
        "epochs": 12,
        "batch_size": 128,
        "learning_rate": 0.1,
        "warmup": 0.05,
        "momentum": 0.9,
        "weight_decay": 4e-5,
        "train_split": "train[5000:]",
        "val_split": "train[:5000]",
        "train_limit": None,
        "val_limit": None,
        "test_limit": None,
        "recalibrate": 2000,
        "latency_repeats": 500,
    },
    "smoke": {
        "epochs": 1,
        "batch_size": 32,
        "learning_rate": 0.05,
        "warmup": 0.0,
        "momentum": 0.9,
        "weight_decay": 4e-5,
        "train_split": "train[5000:]",
        "val_split": "train[:5000]",
        "train_limit": 128,
        "val_limit": 64,
        "test_limit": 64,
        "recalibrate": 64,
        "latency_repeats": 10,
    },
}
# The validation search's shortened schedule (the converged one cut to 3
# epochs); the chosen setting is confirmed at the converged scale.
SCALES["search"] = {**SCALES["converged"], "epochs": 3, "latency_repeats": 200}
COLUMNS = (
    "method",
    "seed",
    "fraction",
    "params",
    "macs",
    "tflite_bytes",
    "latency_ms",
    "accuracy_as_trained",
    "accuracy_masked",
    "accuracy_shrunk",
    "accuracy_tflite",
    "val_accuracy",
    "finetune_seconds",
)


def method_label(method, params=None):
    """`method`, or with settings other than `DEFAULT_PARAMS`,
    `method(key=value,...)`: how tables and claims name the runs."""
    defaults = DEFAULT_PARAMS.get(method, {})
    changed = {
        k: v
        for k, v in sorted((params or {}).items())
        if json.dumps(v) != json.dumps(defaults.get(k))
    }
    if not changed:
        return method
    text = ",".join(
        f"{k}={'-'.join(map(str, v)) if isinstance(v, (list, tuple)) else v}"
        for k, v in changed.items()
    )
    return f"{method}({text})"


def run_name(method, seed, width=None, params=None):
    """The run folder's name: `{label}_s{seed}` (see `method_label`;
    `targeted(rate=0.75)_s0` for one with another alpha), or for a narrow
    network built at prune fraction `width`, `narrow_w{percent}_s{seed}`."""
    label = method_label(method, params)
    if width is None:
        return f"{label}_s{seed}"
    return f"{label}_w{round(width * 100)}_s{seed}"


def _accuracy(logits, labels):
    return float(np.mean(np.argmax(logits, axis=-1) == labels))


def _predict(model, x):
    return model.predict(x, batch_size=500, verbose=0)


def _data(scale, data_dir, seed):
    train = datasets.load(
        "cifar10",
        scale["train_split"],
        batch_size=scale["batch_size"],
        data_dir=data_dir,
        shuffle=True,
        seed=seed,
        limit=scale["train_limit"],
        augment=True,
    )
    return train


# How BatchNorm is recalibrated after pruning: on training images drawn as
# training draws them (augmented). Measured on the plain converged network
# (seed 0): 80.34% as trained, 80.35% recalibrated on 2,000 augmented
# training images, 76.81% on 2,000 unaugmented ones (the layers were trained
# on the statistics of augmented batches). Results evaluated otherwise are
# evaluated again.
CALIBRATION = "augmented"


def _arrays(scale, data_dir):
    """`{"val": (x, y), "test": (x, y), "calib": x}` as numpy arrays; the
    calibration images augmented as in training (a fixed draw)."""
    val = datasets.load_numpy(
        "cifar10",
        scale["val_split"],
        data_dir=data_dir,
        limit=scale["val_limit"],
    )
    test = datasets.load_numpy(
        "cifar10", "test", data_dir=data_dir, limit=scale["test_limit"]
    )
    calib = datasets.load(
        "cifar10",
        scale["train_split"],
        batch_size=scale["recalibrate"],
        data_dir=data_dir,
        shuffle=True,
        seed=12345,
        augment=True,
    )
    calib = next(iter(calib))[0].numpy()
    return {"val": val, "test": test, "calib": calib}


def _compile(model, scale, steps, learning_rate=None, warmup=None):
    lr = learning_rate if learning_rate is not None else scale["learning_rate"]
    warmup = scale["warmup"] if warmup is None else warmup
    warm = int(round(warmup * steps))
    schedule = keras.optimizers.schedules.CosineDecay(
        0.0 if warm else lr,
        decay_steps=max(1, steps - warm),
        warmup_target=lr if warm else None,
        warmup_steps=warm,
    )
    model.compile(
        optimizer=keras.optimizers.SGD(
            schedule, momentum=scale["momentum"], nesterov=True
        ),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    return model


def _steps(scale, epochs):
    size = scale["train_limit"] or 45000
    return epochs * math.ceil(size / scale["batch_size"])


def narrow_network(fraction, seed):
    """`mobile_cnn` with the channel counts that group pruning at
    `fraction` leaves (the same `compute_masks(..., groups=True)` counts,
    so the same architecture and LiteRT latency), freshly initialised."""
    keras.utils.set_random_seed(seed)
    dense = models.mobile_cnn()
    masks = compute_masks(dense, fraction, targeting="unit", groups=True)
    small, _ = shrink(dense, masks)
    keras.utils.set_random_seed(seed)
    return keras.models.clone_model(small)


def _check_config(run_dir, config):
    path = os.path.join(run_dir, "config.json")
    if os.path.exists(path):
        with open(path) as f:
            saved = json.load(f)
        # A setting added since keeps its default, the old behaviour.
        defaults = DEFAULT_PARAMS.get(saved.get("method"), {})
        saved["params"] = {
            **json.loads(json.dumps(defaults)),
            **saved.get("params", {}),
        }
        config = json.loads(json.dumps(config))
        if saved != config:
            changed = sorted(k for k in config if saved.get(k) != config[k])
            raise ValueError(
                f"Run folder {run_dir} holds a run with other settings "
                f"(differing: {changed}); use another `out_dir`. Received: "
                + ", ".join(f"{k}={config[k]!r}" for k in changed)
            )
    write_json(path, config)


def train_run(
    out_dir,
    method,
    seed,
    scale,
    params=None,
    width=None,
    data_dir=None,
    verbose=1,
):
    """Trains one run of `method` (resuming an interrupted one) and
    returns its folder, with `model.keras` the trained plain network.

    `finetune` trains nothing of its own: it re-uses the `none` run of
    the same seed (training it first if needed).
    """
    say = print if verbose else (lambda *a, **k: None)
    if method == "finetune":
        return train_run(
            out_dir, "none", seed, scale, None, None, data_dir, verbose
        )
    params = dict(DEFAULT_PARAMS.get(method, {}), **(params or {}))
    run_dir = os.path.join(out_dir, run_name(method, seed, width, params))
    model_path = os.path.join(run_dir, "model.keras")
    os.makedirs(run_dir, exist_ok=True)
    config = {
        "method": method,
        "seed": seed,
        "width": width,
        "scale": scale,
        "params": params,
    }
    _check_config(run_dir, config)
    if os.path.exists(model_path):
        return run_dir
    keras.utils.set_random_seed(seed)
    if method == "narrow":
        model = narrow_network(width, seed)
    else:
        model = models.mobile_cnn()
    add_weight_decay(model, scale["weight_decay"])
    spec = METHODS[method]
    training, callbacks = spec.prepare(model, params, seed)
    _compile(training, scale, _steps(scale, scale["epochs"]))
    say(
        f"Training {run_name(method, seed, width, params)} "
        f"({spec.description}; "
        f"{model.count_params():,} parameters, {scale['epochs']} epochs) "
        f"in {run_dir}.",
        flush=True,
    )
    start = time.perf_counter()
    training.fit(
        _data(scale, data_dir, seed),
        epochs=scale["epochs"],
        shuffle=False,
        verbose=verbose,
        callbacks=[
            keras.callbacks.BackupAndRestore(os.path.join(run_dir, "backup")),
            keras.callbacks.CSVLogger(
                os.path.join(run_dir, "history.csv"), append=True
            ),
            *callbacks,
        ],
    )
    plain = spec.strip(training)
    for variable in plain.weights:
        variable.regularizer = None  # training's, not the network's
    with atomic_path(model_path) as tmp:
        plain.save(tmp)
    write_json(
        os.path.join(run_dir, "train.json"),
        {"train_seconds": round(time.perf_counter() - start, 1)},
    )
    return run_dir


def _finetune(small, scale, params, seed, data_dir):
    """Fine-tunes a shrunk network for `epochs_fraction` of the training
    epochs (at least one), cosine from `learning_rate`; returns seconds."""
    epochs = max(1, round(params["epochs_fraction"] * scale["epochs"]))
    _compile(
        small,
        scale,
        _steps(scale, epochs),
        learning_rate=params["learning_rate"],
        warmup=0.0,
    )
    start = time.perf_counter()
    small.fit(
        _data(scale, data_dir, seed + 1000),
        epochs=epochs,
        shuffle=False,
        verbose=0,
    )
    return time.perf_counter() - start


def evaluate_run(
    run_dir,
    method,
    seed,
    scale,
    fractions,
    width=None,
    params=None,
    data_dir=None,
    verbose=1,
):
    """Prunes the run's trained network by channel groups at every
    fraction (by its method's importance), shrinks it, recalibrates its
    BatchNorm statistics, exports and times it; returns and writes the
    rows (`COLUMNS`) to `results.json` in `run_dir` (`results_{method}.json`
    for `finetune`, which shares the `none` run's folder).

    A narrow network is evaluated as it was built: one row, its
    `fraction` the prune fraction whose channel counts it has.
    """
    say = print if verbose else (lambda *a, **k: None)
    name = "results.json" if method != "finetune" else "results_finetune.json"
    path = os.path.join(run_dir, name)
    if os.path.exists(path):
        with open(path) as f:
            saved = json.load(f)
        if saved.get("calibration") == CALIBRATION and [
            r["fraction"] for r in saved["rows"]
        ] == _fractions(method, fractions, width):
            return saved["rows"]
    params = dict(DEFAULT_PARAMS.get(method, {}), **(params or {}))
    arrays = _arrays(scale, data_dir)
    x_test, y_test = arrays["test"]
    x_val, y_val = arrays["val"]
    model = keras.saving.load_model(
        os.path.join(run_dir, "model.keras"), compile=False
    )
    spec = METHODS[method]
    rows, files = [], []
    for fraction in _fractions(method, fractions, width):
        prune = 0.0 if method == "narrow" else fraction
        if spec.masks is not None:
            masks = spec.masks(model, prune, params)
        else:
            masks = compute_masks(
                model,
                prune,
                targeting="unit",
                groups=True,
                importance=spec.importance,
            )
        masked = apply_masks(model, masks) if masks else model
        small, _ = shrink(model, masks)
        seconds = None
        if method == "finetune" and prune > 0:
            seconds = round(_finetune(small, scale, params, seed, data_dir), 1)
        if prune == 0 or spec.masks is not None:
            # Before recalibration: the dense network, or (trained for any
            # width) the cut one with the statistics it was trained with.
            before = _accuracy(_predict(small, x_test), y_test)
        else:
            before = None
        masked = recalibrate_batchnorm(masked, arrays["calib"])
        small = recalibrate_batchnorm(small, arrays["calib"], inplace=True)
        file = os.path.join(run_dir, f"{method}_{round(fraction * 100)}.tflite")
        export = to_tflite(small, file, sample=x_test[:16], repeats=1)
        files.append(file)
        rows.append(
            {
                "method": method_label(method, params),
                "seed": seed,
                "fraction": fraction,
                "params": small.count_params(),
                "macs": flops(small),
                "tflite_bytes": export.bytes,
                "latency_ms": None,
                "accuracy_as_trained": before,
                "accuracy_masked": _accuracy(_predict(masked, x_test), y_test),
                "accuracy_shrunk": _accuracy(_predict(small, x_test), y_test),
                "accuracy_tflite": _accuracy(
                    predict_tflite(file, x_test), y_test
                ),
                "val_accuracy": _accuracy(_predict(small, x_val), y_val),
                "finetune_seconds": seconds,
            }
        )
        say(
            f"  {run_name(method, seed, width, params)} at {fraction:.0%}: "
            f"{rows[-1]['macs']:,} MACs, accuracy "
            f"{rows[-1]['accuracy_tflite']:.4f} in LiteRT",
            flush=True,
        )
    for row, latency in zip(
        rows, latencies(files, x_test[:1], scale["latency_repeats"])
    ):
        row["latency_ms"] = latency
    write_json(path, {"rows": rows, "calibration": CALIBRATION})
    return rows


def _fractions(method, fractions, width):
    """The rows a run has: a narrow network one, at its own width; a
    fine-tuned one each fraction above 0 (at 0 there is nothing to
    fine-tune: it is the `none` row)."""
    if method == "narrow":
        return [width]
    if method == "finetune":
        return [f for f in fractions if f > 0]
    return list(fractions)


def latencies(paths, x, repeats):
    """Median batch-1 milliseconds of each file (one LiteRT thread), timed
    in turns: every round runs each file `repeats // LATENCY_ROUNDS` times,
    the order rotated, so a change of the machine's load touches all
    alike."""
    inner = max(1, repeats // LATENCY_ROUNDS)
    times = [[] for _ in paths]
    for r in range(LATENCY_ROUNDS):
        order = list(range(len(paths)))
        order = order[r % len(order) :] + order[: r % len(order)]
        for i in order:
            times[i].append(tflite_latency(paths[i], x, inner, num_threads=1))
    return [float(np.median(t)) for t in times]
