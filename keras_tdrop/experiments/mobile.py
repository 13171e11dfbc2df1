"""`keras-tdrop mobile`: training methods compared on a MobileNetV2-style
CIFAR-10 network, each pruned by channel groups, shrunk, recalibrated,
exported to LiteRT and timed.

One run folder per method and seed (`mobile_runs`), then one table and
plot over all of them (`mobile_compare`).
"""

import time

from keras_tdrop.experiments.mobile_compare import compare_mobile
from keras_tdrop.experiments.mobile_methods import DEFAULT_PARAMS
from keras_tdrop.experiments.mobile_methods import check_methods
from keras_tdrop.experiments.mobile_runs import SCALES
from keras_tdrop.experiments.mobile_runs import evaluate_run
from keras_tdrop.experiments.mobile_runs import train_run
from keras_tdrop.layers.model_ordered_dropout import MODES
from keras_tdrop.pruning.sweep import check_fractions

__all__ = ["FRACTIONS", "WIDTHS", "run_mobile"]

FRACTIONS = (0.0, 0.25, 0.5, 0.7)
WIDTHS = (0.5,)


def _check_seeds(seeds):
    if isinstance(seeds, int):
        seeds = [seeds]
    seeds = list(seeds)
    if not seeds or not all(
        isinstance(s, int) and not isinstance(s, bool) and s >= 0 for s in seeds
    ):
        raise ValueError(
            "`seeds` must be a non-empty list of ints >= 0. "
            f"Received: seeds={seeds!r}"
        )
    return seeds


def _check_widths(widths):
    values = check_fractions(widths) if widths else ()
    if any(not 0.0 < w < 1.0 for w in values):
        raise ValueError(
            "`widths` (the prune fractions of the narrow networks) must be "
            f"in (0, 1). Received: widths={widths!r}"
        )
    return values


def _check_params(params, methods):
    params = dict(params or {})
    for method, values in params.items():
        if method not in DEFAULT_PARAMS:
            raise ValueError(
                f"`params` sets methods with settings, one of "
                f"{sorted(DEFAULT_PARAMS)}. Received: params={params!r}"
            )
        unknown = set(values) - set(DEFAULT_PARAMS[method])
        if unknown:
            raise ValueError(
                f"`params[{method!r}]` takes {sorted(DEFAULT_PARAMS[method])}."
                f" Received: params={params!r}"
            )
        for key, value in values.items():
            if not _in_range(key, value):
                raise ValueError(
                    f"`params[{method!r}][{key!r}]` is out of range. "
                    f"Received: {key}={value!r}"
                )
    return params


def _in_range(key, value):
    """Whether a method setting's value is valid (see DEFAULT_PARAMS)."""
    if key == "mode":
        return value in MODES
    if key in ("num_random", "round_to"):
        return (
            isinstance(value, int)
            and not isinstance(value, bool)
            and value >= (1 if key == "round_to" else 0)
        )
    if key == "ramp":
        return (
            isinstance(value, (list, tuple))
            and len(value) == 2
            and all(0.0 < v <= 1.0 for v in value)
        )
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    if key in ("rate", "target_rate", "epochs_fraction"):
        return 0.0 <= value <= 1.0
    if key == "min_width":
        return 0.0 < value <= 1.0
    if key == "clean_steps":
        return 0.0 <= value < 1.0
    return value >= 0.0  # l1, learning_rate


def run_mobile(
    out_dir="mobile_out",
    methods=("none", "targeted"),
    seeds=(0,),
    scale="smoke",
    fractions=FRACTIONS,
    widths=WIDTHS,
    params=None,
    data_dir=None,
    verbose=1,
):
    """Trains each method on `models.mobile_cnn` for each seed, prunes it
    by channel groups at every fraction, and compares them.

    Every method starts from the same initial weights (the seed), sees the
    same data order and augmentation, and is evaluated the same way: for
    each fraction p, `compute_masks(model, p, targeting="unit",
    groups=True, importance=...)`, `shrink`, `recalibrate_batchnorm` on
    training images, `to_tflite` (checked against Keras), accuracy on the
    test set in LiteRT and on the validation split (5,000 training images
    never trained on, where settings are chosen), and LiteRT batch-1
    latency. Methods (`mobile_methods.METHODS`):

    - `none`: plain training, then group pruning by magnitude.
    - `targeted`: group unit targeted dropout
      (`ModelTargetedDropout(..., targeting="unit", groups=True)`, the
      moving statistics held), ramped in by `RampingCallback`.
    - `slimming`: Network Slimming: L1 on the BatchNorm scales in
      training, pruned by them (`importance="bn_scale"`).
    - `narrow`: for each of `widths`, the network with the channel counts
      pruning at that fraction leaves, trained from scratch (same budget).
    - `finetune`: the `none` network (re-used), pruned, shrunk, then
      fine-tuned for a tenth of the training epochs.

    Run folders resume (see `mobile_runs`). The table and plot over every
    run folder in `out_dir` go to `{out_dir}/compare/`.

    Args:
        out_dir: the folder of the run folders.
        methods: names of `METHODS` (a list, or a comma-separated string).
        seeds: ints, one run of each method per seed.
        scale: `"converged"` (about an hour per plain run on one CPU core)
            or `"smoke"` (seconds), see `mobile_runs.SCALES`.
        fractions: prune fractions in [0, 1] of every method but `narrow`.
        widths: prune fractions in (0, 1) whose widths `narrow` trains.
        params: `{method: {setting: value}}` overriding `DEFAULT_PARAMS`
            (`targeted`: rate, target_rate, ramp; `slimming`: l1;
            `finetune`: epochs_fraction, learning_rate).
        data_dir: TFDS data directory; default `$TFDS_DATA_DIR`.
        verbose: 0 silent, 1 progress, 2 one line per epoch.

    Returns:
        The comparison rows (`mobile_compare.summarize`).

    Example:
    >>> run_mobile("mobile_out", ["none", "targeted", "narrow"], [0, 1])
    """
    methods = check_methods(methods)
    seeds = _check_seeds(seeds)
    fractions = check_fractions(fractions)
    widths = _check_widths(widths)
    params = _check_params(params, methods)
    if scale not in SCALES:
        raise ValueError(
            f"`scale` must be one of {sorted(SCALES)}. "
            f"Received: scale={scale!r}"
        )
    if "narrow" in methods and not widths:
        raise ValueError(
            "method 'narrow' trains one network per width: give `widths`. "
            f"Received: widths={widths!r}"
        )
    settings = SCALES[scale]
    say = print if verbose else (lambda *a, **k: None)
    start = time.perf_counter()
    for seed in seeds:
        for method in methods:
            for width in widths if method == "narrow" else [None]:
                run_dir = train_run(
                    out_dir,
                    method,
                    seed,
                    settings,
                    params.get(method),
                    width,
                    data_dir,
                    verbose,
                )
                evaluate_run(
                    run_dir,
                    method,
                    seed,
                    settings,
                    fractions,
                    width,
                    params.get(method),
                    data_dir,
                    verbose,
                )
                say(
                    f"{method} seed {seed} done "
                    f"({time.perf_counter() - start:.0f} s).",
                    flush=True,
                )
    return compare_mobile(out_dir, verbose=verbose)
