"""A run's configuration: `resolve_config`, its model and its optimizer.

`resolve_config` turns an experiment of the registry and its overrides into
the JSON-ready settings saved in a run folder's `config.json`;
`build_training_model` builds the model those settings describe, with its
method applied, weight decay on and compiled with the run's learning rate.
"""

import math
import re

import keras

from keras_tdrop import __version__
from keras_tdrop.experiments import datasets
from keras_tdrop.experiments import models
from keras_tdrop.experiments import registry
from keras_tdrop.pruning.sweep import FRACTIONS
from keras_tdrop.pruning.sweep import check_fractions

__all__ = [
    "EXCLUDE",
    "INPUT_SHAPES",
    "RECIPE_KEYS",
    "TEST_SIZES",
    "TRAIN_SIZES",
    "add_weight_decay",
    "build_model",
    "build_training_model",
    "check_recalibrate",
    "compile_model",
    "learning_rate",
    "resolve_config",
]

TRAIN_SIZES = {"cifar10": 50000, "mnist": 60000}
TEST_SIZES = {"cifar10": 10000, "mnist": 10000}
INPUT_SHAPES = {"cifar10": (32, 32, 3), "mnist": (28, 28, 1)}
EXCLUDE = ("stem",)
RECIPE_KEYS = tuple(registry.RECIPE)


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
        datasets.check_limit(value)
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
