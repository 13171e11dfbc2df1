"""`keras-tdrop train EXPERIMENT`: one named experiment, one run folder.

A run folder holds `config.json` (every resolved setting and the seed),
`model.keras` (the trained model, stripped to plain Keras layers and saved
uncompiled),
`history.csv`, `ramp.csv` (alpha and gamma, means over the targeted
layers, at every optimizer step), `logs/` (TensorBoard, when tensorboard
is installed: the epoch metrics, and `ramp/alpha`, `ramp/gamma` per step),
`backup/` (BackupAndRestore, while training), `sweep_weight.csv`,
`sweep_unit.csv`, `sweep.png`, for models with BatchNormalization the
same sweeps with the statistics recalibrated at every fraction
(`sweep_weight_recalibrated.csv`, `sweep_unit_recalibrated.csv`,
`sweep_recalibrated.png`), `results.json`, and `dense.json` for runs
whose TargetedDropout prunes at inference (the ramped runs: they are saved,
evaluated and swept with the targeted set pruned, as for-ai/TD evaluates
them; `dense.json` holds the dense weights' accuracy). Running the same command
again resumes an interrupted run from its last epoch, the ramp where it was
(it follows the optimizer's step), or reports a finished one; with other
`fractions`, or a `recalibrate` it was not swept with, it sweeps the
trained model again.
"""

import json
import os
import time

import keras

from keras_tdrop.atomic_write import atomic_path
from keras_tdrop.atomic_write import atomic_write
from keras_tdrop.experiments import datasets
from keras_tdrop.experiments import registry
from keras_tdrop.experiments.ramp_logger import RampLogger
from keras_tdrop.experiments.ramp_logger import has_tensorboard
from keras_tdrop.experiments.run_config import EXCLUDE
from keras_tdrop.experiments.run_config import INPUT_SHAPES
from keras_tdrop.experiments.run_config import RECIPE_KEYS
from keras_tdrop.experiments.run_config import TEST_SIZES
from keras_tdrop.experiments.run_config import TRAIN_SIZES
from keras_tdrop.experiments.run_config import add_weight_decay
from keras_tdrop.experiments.run_config import build_model
from keras_tdrop.experiments.run_config import build_training_model
from keras_tdrop.experiments.run_config import check_recalibrate
from keras_tdrop.experiments.run_config import compile_model
from keras_tdrop.experiments.run_config import learning_rate
from keras_tdrop.experiments.run_config import resolve_config
from keras_tdrop.experiments.run_sweep import RECALIBRATED_FILES
from keras_tdrop.experiments.run_sweep import recalibration_data
from keras_tdrop.experiments.run_sweep import remove_recalibrated
from keras_tdrop.experiments.run_sweep import sweep
from keras_tdrop.pruning.recalibrate import batchnorm_layers
from keras_tdrop.pruning.sweep import FRACTIONS
from keras_tdrop.wrapping import clone_with_weights

__all__ = [
    "EXCLUDE",
    "INPUT_SHAPES",
    "RECALIBRATED_FILES",
    "RECIPE_KEYS",
    "RampLogger",
    "TEST_SIZES",
    "TRAIN_SIZES",
    "add_weight_decay",
    "build_model",
    "build_training_model",
    "check_recalibrate",
    "compile_model",
    "has_tensorboard",
    "learning_rate",
    "recalibration_data",
    "resolve_config",
    "sweep",
    "train",
    "write_json",
]


def _json(value):
    return json.loads(json.dumps(value))


def write_json(path, value):
    """Writes `value` as JSON, atomically (never half-written)."""
    with atomic_write(path) as f:
        json.dump(value, f, indent=2, sort_keys=True)
        f.write("\n")


def _data(config, data_dir):
    recipe = config["recipe"]
    train = datasets.load(
        config["data"],
        "train",
        batch_size=recipe["batch_size"],
        data_dir=data_dir,
        shuffle=True,
        seed=config["seed"],
        limit=config["train_limit"],
        augment=recipe["augment"],
        standardize=recipe["standardize"],
    )
    test = datasets.load(
        config["data"],
        "test",
        batch_size=500,
        data_dir=data_dir,
        limit=config["test_limit"],
        standardize=recipe["standardize"],
    )
    return train, test


def _callbacks(config, run_dir, extra):
    from keras_tdrop.callbacks.ramping import RampingCallback

    callbacks = [
        keras.callbacks.BackupAndRestore(os.path.join(run_dir, "backup")),
    ]
    if config["ramp"] is not None:
        callbacks.append(
            RampingCallback(
                schedule=config["ramp"]["schedule"],
                ramp_steps=tuple(config["ramp"]["ramp_steps"]),
            )
        )
    method = registry.method(config["method"])
    if method.callbacks is not None:
        callbacks.extend(method.callbacks(**config["params"]))
    logs = os.path.join(run_dir, "logs")
    callbacks += [
        RampLogger(
            os.path.join(run_dir, "ramp.csv"), os.path.join(logs, "ramp")
        ),
        keras.callbacks.CSVLogger(
            os.path.join(run_dir, "history.csv"), append=True
        ),
    ]
    if has_tensorboard():
        callbacks.append(keras.callbacks.TensorBoard(logs))
    return callbacks + list(extra or [])


def _check_existing(run_dir, config):
    path = os.path.join(run_dir, "config.json")
    if not os.path.exists(path):
        return
    with open(path) as f:
        saved = json.load(f)
    # The fractions only choose the sweep: a finished run may be re-swept.
    saved["fractions"] = _json(config)["fractions"]
    if saved != _json(config):
        changed = sorted(
            k
            for k in set(saved) | set(config)
            if saved.get(k) != _json(config).get(k)
        )
        raise ValueError(
            f"Run folder {run_dir} holds a run with other settings "
            f"(differing: {changed}); use another --out to start a new run. "
            f"Received: run_dir={run_dir!r}"
        )


def train(
    experiment,
    out_dir=None,
    model=None,
    width=None,
    data="cifar10",
    epochs=None,
    batch_size=None,
    train_limit=None,
    test_limit=None,
    fractions=FRACTIONS,
    seed=0,
    data_dir=None,
    callbacks=None,
    verbose=1,
    recalibrate=2000,
    **recipe,
):
    """Trains experiment `experiment`, saves it, and sweeps its pruning.

    Args:
        experiment: a name in `registry.EXPERIMENTS`.
        out_dir: the run folder; default `runs/{experiment}_{model}`.
        model: `resnet{depth}`, `toy_mlp`, `mnist_cnn` or `mnist_mlp`;
            default the experiment's model, else `resnet32`.
        width: resnet width multiplier (default 1).
        data: `"cifar10"` or `"mnist"`.
        epochs, batch_size: override the recipe's.
        train_limit, test_limit: optional ints, the first examples only.
        fractions: prune fractions of both sweeps.
        seed: int for the initial weights, data order and noise.
        data_dir: TFDS data directory.
        callbacks: extra Keras callbacks for `fit`.
        verbose: 0 silent, 1 progress bars, 2 a line per epoch.
        recalibrate: int, for a model with BatchNormalization, sweep
            again with the statistics recalibrated at every fraction on
            this many training examples (unaugmented; see
            `recalibrate_batchnorm`); 0 turns it off. Not a setting of the
            run: a finished run can be swept again with it.
        **recipe: overrides of `registry.RECIPE` (e.g. `learning_rate`).

    Returns:
        The results dict written to `results.json`: `test_accuracy`,
        `sweeps` (`{"weight": rows, "unit": rows}`), `recalibrate` (the
        examples asked for), `sweeps_recalibrated` (the same with
        recalibration, for a model with BatchNormalization) and the run's
        timings.

    Example:
    >>> train("targeted_weight_0.66_0.75", "runs/td", model="resnet8",
    ...       width=0.5, epochs=3)
    """
    check_recalibrate(recalibrate)
    config = resolve_config(
        experiment,
        model,
        width,
        data,
        epochs,
        batch_size,
        train_limit,
        test_limit,
        fractions,
        seed,
        **recipe,
    )
    run_dir = out_dir or os.path.join("runs", f"{experiment}_{config['model']}")
    say = print if verbose else (lambda *a, **k: None)
    os.makedirs(run_dir, exist_ok=True)
    _check_existing(run_dir, config)
    results_path = os.path.join(run_dir, "results.json")
    previous = None
    if os.path.exists(results_path):
        with open(results_path) as f:
            previous = json.load(f)
        swept = [r["fraction"] for r in previous["sweeps"]["weight"]]
        if swept != config["fractions"]:
            previous["sweeps"] = None
        elif not recalibrate or previous.get("recalibrate") == recalibrate:
            say(
                f"{run_dir} is finished (other --fractions or --recalibrate "
                "sweep it again)."
            )
            return previous
    write_json(os.path.join(run_dir, "config.json"), config)
    train_ds, test_ds = _data(config, data_dir)
    model_path = os.path.join(run_dir, "model.keras")
    start = time.perf_counter()
    if os.path.exists(model_path):
        say(f"Loading the trained model from {model_path}.")
        plain = keras.saving.load_model(model_path, compile=False)
    else:
        training = build_training_model(config)
        say(
            f"Training {experiment} ({config['description']}) on "
            f"{config['model']}: {config['recipe']['epochs']} epochs of "
            f"{config['steps_per_epoch']} steps, run folder {run_dir}."
        )
        training.fit(
            train_ds,
            epochs=config["recipe"]["epochs"],
            validation_data=test_ds,
            shuffle=False,  # the dataset shuffles itself
            callbacks=_callbacks(config, run_dir, callbacks),
            verbose=verbose,
        )
        plain = registry.method(config["method"]).strip(training)
        if plain.compiled:
            plain = clone_with_weights(plain)
        dense = _dense_accuracy(training, test_ds, config)
        if dense is not None:
            write_json(os.path.join(run_dir, "dense.json"), dense)
        with atomic_path(model_path) as tmp:
            plain.save(tmp)  # uncompiled: weights and architecture only
    compile_model(plain, config)
    train_seconds = time.perf_counter() - start
    results = {
        "experiment": experiment,
        "model": config["model"],
        "test_accuracy": float(
            plain.evaluate(test_ds, verbose=0, return_dict=True)["accuracy"]
        ),
        "train_seconds": previous["train_seconds"]
        if previous
        else round(train_seconds, 1),
        "sweeps": (previous or {}).get("sweeps")
        or sweep(plain, test_ds, run_dir, config, verbose=verbose),
        "recalibrate": recalibrate,
    }
    remove_recalibrated(run_dir)
    if recalibrate and batchnorm_layers(plain):
        results["sweeps_recalibrated"] = sweep(
            plain,
            test_ds,
            run_dir,
            config,
            verbose=verbose,
            recalibrate=recalibration_data(config, data_dir, recalibrate),
        )
    dense_path = os.path.join(run_dir, "dense.json")
    if os.path.exists(dense_path):
        with open(dense_path) as f:
            results.update(json.load(f))
    results["total_seconds"] = round(time.perf_counter() - start, 1)
    write_json(results_path, results)
    say(f"Wrote {run_dir} ({results['total_seconds']:.0f} s).")
    return results


def _dense_accuracy(training, test_ds, config):
    """For a run whose TargetedDropout layers prune at inference (so the
    saved model has the targeted set zeroed): the test accuracy of the
    trained weights left dense, `{"dense_test_accuracy": a}`; else None."""
    from keras_tdrop.wrapping import strip_targeted_dropout
    from keras_tdrop.wrapping import targeted_dropout_layers

    layers = targeted_dropout_layers(training)
    if not any(layer.prunes_at_inference() for layer in layers):
        return None
    dense = strip_targeted_dropout(training, prune_targeted=False)
    compile_model(dense, config)
    accuracy = dense.evaluate(test_ds, verbose=0, return_dict=True)["accuracy"]
    return {"dense_test_accuracy": float(accuracy)}
