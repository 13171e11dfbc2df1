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
import math
import os
import re
import time

import keras

from keras_tdrop import __version__
from keras_tdrop.atomic_write import atomic_path
from keras_tdrop.atomic_write import atomic_write
from keras_tdrop.experiments import datasets
from keras_tdrop.experiments import models
from keras_tdrop.experiments import registry
from keras_tdrop.pruning.recalibrate import batchnorm_layers
from keras_tdrop.pruning.sweep import FRACTIONS
from keras_tdrop.pruning.sweep import check_fractions
from keras_tdrop.wrapping import clone_with_weights

__all__ = [
    "RampLogger",
    "build_model",
    "build_training_model",
    "check_recalibrate",
    "compile_model",
    "recalibration_data",
    "resolve_config",
    "sweep",
    "train",
]

TRAIN_SIZES = {"cifar10": 50000, "mnist": 60000}
TEST_SIZES = {"cifar10": 10000, "mnist": 10000}
INPUT_SHAPES = {"cifar10": (32, 32, 3), "mnist": (28, 28, 1)}
EXCLUDE = ("stem",)
RECIPE_KEYS = tuple(registry.RECIPE)
RECALIBRATED_FILES = (
    "sweep_weight_recalibrated.csv",
    "sweep_unit_recalibrated.csv",
    "sweep_recalibrated.png",
)


def build_model(name, width=None, data="cifar10", num_classes=10):
    """A model by name: `resnet{depth}` (`width`, default 1), `toy_mlp`,
    `mnist_cnn` or `mnist_mlp`, for the input shape of `data`."""
    shape = INPUT_SHAPES[data]
    match = re.fullmatch(r"resnet(\d+)", str(name))
    if match:
        return models.resnet(
            int(match.group(1)),
            1.0 if width is None else width,
            num_classes=num_classes,
            input_shape=shape,
        )
    builders = {
        "toy_mlp": models.toy_mlp,
        "mnist_cnn": models.mnist_cnn,
        "mnist_mlp": models.mnist_mlp,
    }
    if name not in builders:
        raise ValueError(
            "`model` must be resnet{depth} (resnet8, resnet20, resnet32, ...), "
            f"{', '.join(builders)}. Received: model={name!r}"
        )
    if width is not None:
        raise ValueError(
            f"`width` applies to resnet models only. Received: width={width!r}"
            f" with model={name!r}"
        )
    return builders[name](input_shape=shape, num_classes=num_classes)


def _scaled(steps, factor):
    return [max(1, int(round(s * factor))) for s in steps]


def resolve_config(
    experiment,
    model=None,
    width=None,
    data="cifar10",
    epochs=None,
    batch_size=None,
    train_limit=None,
    test_limit=None,
    fractions=FRACTIONS,
    seed=0,
    **recipe,
):
    """Every setting of a run, as the JSON-ready dict saved in config.json.

    The experiment's recipe (registry.RECIPE with its overrides) is updated
    with `epochs`, `batch_size` and `recipe` (any RECIPE key); the
    learning-rate milestones and the ramp, given in the reference's steps,
    are scaled by `planned steps / reference_steps`.
    """
    spec = registry.get(experiment)
    if data not in TRAIN_SIZES:
        raise ValueError(
            f"`data` must be one of {tuple(TRAIN_SIZES)}. "
            f"Received: data={data!r}"
        )
    unknown = sorted(set(recipe) - set(RECIPE_KEYS))
    if unknown:
        raise ValueError(
            f"Unknown recipe settings {unknown}; expected some of "
            f"{RECIPE_KEYS}. Received: {recipe!r}"
        )
    for name, value in (
        ("train_limit", train_limit),
        ("test_limit", test_limit),
    ):
        datasets._check_limit(value)
    resolved = dict(spec["recipe"])
    resolved.update({k: v for k, v in recipe.items() if v is not None})
    if epochs is not None:
        resolved["epochs"] = epochs
    if batch_size is not None:
        resolved["batch_size"] = batch_size
    for name in ("epochs", "batch_size"):
        value = resolved[name]
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(
                f"`{name}` must be an int >= 1. Received: {name}={value!r}"
            )
    if resolved["lr_schedule"] not in ("step", "cosine"):
        raise ValueError(
            "`lr_schedule` must be 'step' or 'cosine'. Received: "
            f"lr_schedule={resolved['lr_schedule']!r}"
        )
    warmup = resolved["lr_warmup"]
    if isinstance(warmup, bool) or not 0.0 <= float(warmup) < 1.0:
        raise ValueError(
            "`lr_warmup` must be a fraction of the run's steps in [0, 1). "
            f"Received: lr_warmup={warmup!r}"
        )
    if data != "cifar10":
        resolved["augment"] = False  # crops and flips are CIFAR-10's
    model = model or spec["model"] or "resnet32"
    build_model(model, width, data)  # fails early on a bad name
    examples = min(TRAIN_SIZES[data], train_limit or TRAIN_SIZES[data])
    steps_per_epoch = math.ceil(examples / resolved["batch_size"])
    planned = steps_per_epoch * resolved["epochs"]
    factor = planned / resolved["reference_steps"]
    ramp = None
    if spec["ramp"] is not None:
        ramp = dict(spec["ramp"])
        ramp["ramp_steps"] = _scaled(ramp["ramp_steps"], factor)
    return {
        "experiment": spec["name"],
        "version": spec["version"],
        "method": spec["method"],
        "params": spec["params"],
        "paper": spec["paper"],
        "description": spec["description"],
        "model": model,
        "width": width,
        "data": data,
        "train_limit": train_limit,
        "test_limit": test_limit,
        "train_examples": examples,
        "recipe": resolved,
        "steps_per_epoch": steps_per_epoch,
        "planned_steps": planned,
        "lr_boundaries_steps": _scaled(resolved["lr_boundaries"], factor),
        "ramp": ramp,
        "exclude": list(EXCLUDE),
        "fractions": list(check_fractions(fractions)),
        "seed": seed,
        "keras_tdrop": __version__,
        "keras": keras.__version__,
        "backend": keras.backend.backend(),
    }


def _json(value):
    return json.loads(json.dumps(value))


def write_json(path, value):
    """Writes `value` as JSON, atomically (never half-written)."""
    with atomic_write(path) as f:
        json.dump(value, f, indent=2, sort_keys=True)
        f.write("\n")


def add_weight_decay(model, weight_decay):
    """Adds `weight_decay * sum(w^2) / 2` of every kernel to the loss, on
    top of any regularizer a kernel has (L1 of the L1 experiment)."""
    from keras_tdrop.kernels import iter_layers
    from keras_tdrop.kernels import kernel_variables

    if not weight_decay:
        return
    l2 = keras.regularizers.L2(weight_decay / 2)
    for layer in iter_layers(model):
        for kernel in kernel_variables(layer):
            other = kernel.regularizer
            if other is None:
                kernel.regularizer = l2
            else:
                kernel.regularizer = lambda w, a=other: a(w) + l2(w)


def learning_rate(config):
    """The run's learning rate: a float or a Keras schedule (the recipe's
    `lr_schedule`: `"step"` milestones or warm-up then `"cosine"`)."""
    recipe = config["recipe"]
    boundaries = config["lr_boundaries_steps"]
    lr = recipe["learning_rate"]
    schedule = recipe.get("lr_schedule", "step")
    if schedule == "cosine":
        steps = config["planned_steps"]
        warmup = int(round(recipe.get("lr_warmup", 0.0) * steps))
        return keras.optimizers.schedules.CosineDecay(
            initial_learning_rate=0.0 if warmup else lr,
            decay_steps=max(1, steps - warmup),
            warmup_target=lr if warmup else None,
            warmup_steps=warmup,
        )
    if schedule != "step":
        raise ValueError(
            "`lr_schedule` must be 'step' or 'cosine'. Received: "
            f"lr_schedule={schedule!r}"
        )
    if boundaries:
        values = [
            lr * recipe["lr_decay"] ** i for i in range(len(boundaries) + 1)
        ]
        lr = keras.optimizers.schedules.PiecewiseConstantDecay(
            boundaries, values
        )
    return lr


def compile_model(model, config):
    """SGD with momentum, the recipe's learning rate, global-norm clip."""
    recipe = config["recipe"]
    lr = learning_rate(config)
    if recipe["optimizer"] != "sgd":
        raise ValueError(
            "Only the references' optimizer is supported. Received: "
            f"optimizer={recipe['optimizer']!r}"
        )
    optimizer = keras.optimizers.SGD(
        learning_rate=lr,
        momentum=recipe["momentum"],
        global_clipnorm=recipe["global_clipnorm"],
    )
    model.compile(
        optimizer=optimizer,
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    return model


class RampLogger(keras.callbacks.Callback):
    """Records alpha and gamma (means over the TargetedDropout layers) at
    every optimizer step: appended to `csv_path` (`step,alpha,gamma`) and,
    when tensorboard is installed, written to TensorBoard in `log_dir` as
    `ramp/alpha` and `ramp/gamma`. A resumed run appends from its step."""

    def __init__(self, csv_path, log_dir=None):
        super().__init__()
        self.csv_path = csv_path
        self.log_dir = log_dir
        self._writer = None
        self._file = None
        self._layers = []

    def on_train_begin(self, logs=None):
        from keras_tdrop.wrapping import targeted_dropout_layers

        self._layers = targeted_dropout_layers(self.model)
        if not self._layers:
            return
        new = not os.path.exists(self.csv_path)
        self._file = open(self.csv_path, "a")
        if new:
            self._file.write("step,alpha,gamma\n")
        if self.log_dir is not None and has_tensorboard():
            import tensorflow as tf

            self._writer = tf.summary.create_file_writer(self.log_dir)

    def on_train_batch_begin(self, batch, logs=None):
        if not self._layers:
            return
        step = int(keras.ops.convert_to_numpy(self.model.optimizer.iterations))
        n = len(self._layers)
        alpha = sum(layer.current_rate for layer in self._layers) / n
        gamma = sum(layer.current_target_rate for layer in self._layers) / n
        self._file.write(f"{step},{alpha:.6g},{gamma:.6g}\n")
        if self._writer is not None:
            import tensorflow as tf

            with self._writer.as_default():
                tf.summary.scalar("ramp/alpha", alpha, step)
                tf.summary.scalar("ramp/gamma", gamma, step)

    def on_epoch_end(self, epoch, logs=None):
        if self._file is not None:
            self._file.flush()

    def on_train_end(self, logs=None):
        if self._file is not None:
            self._file.close()
            self._file = None
        if self._writer is not None:
            self._writer.close()
            self._writer = None


def has_tensorboard():
    """Whether the tensorboard package is installed (TF 2.21 does not
    depend on it; `pip install tensorboard` to get the TensorBoard logs)."""
    import importlib.util

    return importlib.util.find_spec("tensorboard") is not None


def check_recalibrate(recalibrate):
    """`recalibrate` as an int >= 0, or a ValueError naming it."""
    if (
        isinstance(recalibrate, bool)
        or not isinstance(recalibrate, int)
        or recalibrate < 0
    ):
        raise ValueError(
            "`recalibrate` must be an int >= 0 (training examples; 0 turns "
            f"recalibration off). Received: recalibrate={recalibrate!r}"
        )
    return recalibrate


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


def build_training_model(config):
    """The model of `config` with its method applied and weight decay on."""
    keras.utils.set_random_seed(config["seed"])
    base = build_model(config["model"], config["width"], config["data"])
    method = registry.method(config["method"])
    model = method.apply(
        base, exclude=config["exclude"], seed=config["seed"], **config["params"]
    )
    add_weight_decay(model, config["recipe"]["weight_decay"])
    return compile_model(model, config)


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
    _remove_recalibrated(run_dir)
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


def _remove_recalibrated(run_dir):
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
