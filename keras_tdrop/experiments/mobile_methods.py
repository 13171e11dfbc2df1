"""The training methods `keras-tdrop mobile` compares, one entry each.

A method turns a freshly built `mobile_cnn` into what `fit` trains, and
says how the trained network's channels are ranked for group pruning.
`METHODS` is open: add a `MobileMethod` and the command, its run folders
and its table know it.
"""

import collections

import keras

from keras_tdrop.callbacks.ramping import RampingCallback
from keras_tdrop.layers.model_ordered_dropout import ModelOrderedDropout
from keras_tdrop.layers.model_targeted_dropout import ModelTargetedDropout
from keras_tdrop.pruning.ordered_masks import ordered_masks
from keras_tdrop.pruning.recalibrate import batchnorm_layers

__all__ = ["METHODS", "MobileMethod", "check_methods"]

MobileMethod = collections.namedtuple(
    "MobileMethod",
    ["prepare", "strip", "importance", "description", "masks"],
    defaults=(None,),
)
MobileMethod.__doc__ = """One training method of `keras-tdrop mobile`.

`prepare(model, params, seed)` returns `(training model, callbacks)`;
`strip(training model)` the plain trained network; `importance` the
`compute_masks(..., groups=True, importance=...)` it is pruned by, unless
`masks(model, fraction, params)` gives its masks at each prune fraction
(a network trained for any width is cut to its first channels).
`params` are the run's method settings (`DEFAULT_PARAMS`).
"""

# The settings of each method (overridden from the command line).
DEFAULT_PARAMS = {
    "targeted": {
        "rate": 0.5,
        "target_rate": 0.5,
        "ramp": (0.25, 0.5),
        "clean_steps": 0.0,
    },
    "slimming": {"l1": 1e-4},
    "triangular": {
        "min_width": 0.25,
        "mode": "sandwich",
        "num_random": 1,
        "round_to": 1,
        "ramp": (0.1, 0.2),
    },
    "finetune": {"epochs_fraction": 0.1, "learning_rate": 0.01},
}


def _plain(model, params, seed):
    return model, []


def _same(model):
    return model


def _targeted(model, params, seed):
    """Group unit targeted dropout (moving statistics held, or learned on
    `clean_steps` only), ramped over the `ramp` fractions of training."""
    training = ModelTargetedDropout(
        model,
        rate=params["rate"],
        target_rate=params["target_rate"],
        targeting="unit",
        groups=True,
        seed=seed,
        clean_steps=params["clean_steps"],
    )
    ramp = RampingCallback(ramp_fraction=tuple(params["ramp"]))
    return training, [ramp]


def _ordered(model, params, seed):
    """Ordered channel dropout (`ModelOrderedDropout`), its deepest cut
    ramped in over the `ramp` fractions of training."""
    training = ModelOrderedDropout(
        model,
        min_width=params["min_width"],
        mode=params["mode"],
        num_random=params["num_random"],
        round_to=params["round_to"],
        seed=seed,
    )
    ramp = RampingCallback(ramp_fraction=tuple(params["ramp"]))
    return training, [ramp]


def _first_channels(model, fraction, params):
    """The masks of `truncate(model, 1 - fraction)`: each group keeps its
    first channels, as many as pruning `fraction` by importance keeps."""
    return ordered_masks(model, 1.0 - fraction, round_to=params["round_to"])


def _unwrap(training):
    return training.model


def _slimming(model, params, seed):
    """Network Slimming: an L1 penalty `l1 * sum|gamma|` on every
    BatchNormalization scale, added to the loss."""
    layers = batchnorm_layers(model)
    if not layers:
        raise ValueError(
            "method 'slimming' penalises BatchNormalization scales, and the "
            f"model '{model.name}' has none."
        )
    l1 = keras.regularizers.L1(params["l1"])
    for layer in layers:
        layer.gamma.regularizer = l1
    return model, []


def _slimming_strip(model):
    for layer in batchnorm_layers(model):
        layer.gamma.regularizer = None
    return model


METHODS = {
    "none": MobileMethod(_plain, _same, "magnitude", "plain training"),
    "targeted": MobileMethod(
        _targeted,
        _unwrap,
        "magnitude",
        "group unit targeted dropout, ramped",
    ),
    "slimming": MobileMethod(
        _slimming,
        _slimming_strip,
        "bn_scale",
        "Network Slimming (L1 on BatchNorm scales, pruned by |gamma|)",
    ),
    "narrow": MobileMethod(
        _plain,
        _same,
        "magnitude",
        "the pruned width, trained from scratch",
    ),
    "triangular": MobileMethod(
        _ordered,
        _unwrap,
        None,
        "ordered (triangular) channel dropout, truncated to each width",
        _first_channels,
    ),
    "finetune": MobileMethod(
        _plain,
        _same,
        "magnitude",
        "plain training, group pruning, then fine-tuning the shrunk model",
    ),
}


def check_methods(methods):
    """`methods` as a list of names of `METHODS`, or a ValueError."""
    if isinstance(methods, str):
        methods = [m for m in methods.split(",") if m]
    methods = list(methods)
    unknown = [m for m in methods if m not in METHODS]
    if unknown or not methods:
        raise ValueError(
            f"`method` must be one or more of {sorted(METHODS)}. "
            f"Received: method={','.join(map(str, methods)) or methods!r}"
        )
    return methods
