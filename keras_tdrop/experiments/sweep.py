"""`keras-tdrop sweep`: prune saved models at each fraction, on real data."""

import os

from keras_tdrop.experiments._argtypes import add_data_dir
from keras_tdrop.experiments._argtypes import add_fractions
from keras_tdrop.experiments._argtypes import add_limit
from keras_tdrop.experiments._argtypes import add_quiet
from keras_tdrop.experiments._argtypes import add_recalibrate
from keras_tdrop.experiments._argtypes import positive_int
from keras_tdrop.experiments._argtypes import verbosity
from keras_tdrop.experiments._plots import can_plot
from keras_tdrop.pruning.masks import CRITERIA
from keras_tdrop.pruning.masks import SCOPES

__all__ = ["add_arguments", "run", "sweep_files"]


def add_arguments(parser):
    """The arguments of `keras-tdrop sweep`."""
    parser.add_argument(
        "models",
        nargs="+",
        metavar="MODEL.keras",
        help="saved Keras models; several are compared (one column and one "
        "curve each)",
    )
    parser.add_argument("--data", choices=("mnist", "cifar10"), required=True)
    parser.add_argument(
        "--out", default="sweep_out", help="folder for sweep.csv and sweep.png"
    )
    parser.add_argument(
        "--names",
        default=None,
        help="comma-separated labels of the models (default: file names)",
    )
    parser.add_argument(
        "--targeting", choices=("weight", "unit"), default="weight"
    )
    parser.add_argument(
        "--scope",
        choices=SCOPES,
        default="local",
        help="local: per column (units: per layer); global: one threshold "
        "over all kernels",
    )
    parser.add_argument(
        "--block-size",
        type=positive_int,
        default=None,
        help="N:M structure: prune within blocks of M inputs (2:4 is "
        "--block-size 4 at fraction 0.5)",
    )
    parser.add_argument("--criterion", choices=CRITERIA, default="magnitude")
    add_fractions(parser)
    parser.add_argument(
        "--exclude",
        action="append",
        default=[],
        metavar="LAYER",
        help="a layer left unpruned (repeatable); the logits always are",
    )
    parser.add_argument(
        "--probabilities",
        action="store_true",
        help="the models output probabilities, not logits (used only for "
        "models saved uncompiled)",
    )
    add_data_dir(parser, "TFDS data directory (default: $TFDS_DATA_DIR)")
    parser.add_argument("--batch-size", type=positive_int, default=500)
    add_limit(parser, "test", "evaluate on the first N test examples only")
    parser.add_argument("--seed", type=int, default=0)
    add_recalibrate(parser, 0)
    add_quiet(parser)


def run(args):
    """Runs `keras-tdrop sweep` with parsed `args`; returns the sweeps."""
    names = (
        args.names.split(",")
        if args.names
        else [os.path.splitext(os.path.basename(p))[0] for p in args.models]
    )
    if len(names) != len(args.models) or len(set(names)) != len(names):
        raise SystemExit(
            f"keras-tdrop sweep: error: --names must give {len(args.models)} "
            f"distinct labels, got {names}"
        )
    missing = [p for p in args.models if not os.path.isfile(p)]
    if missing:
        raise SystemExit(
            f"keras-tdrop sweep: error: no such file: {missing[0]}"
        )
    return sweep_files(
        dict(zip(names, args.models)),
        args.data,
        out_dir=args.out,
        targeting=args.targeting,
        scope=args.scope,
        block_size=args.block_size,
        criterion=args.criterion,
        fractions=args.fractions,
        exclude=args.exclude or None,
        probabilities=args.probabilities,
        data_dir=args.data_dir,
        batch_size=args.batch_size,
        test_limit=args.test_limit,
        seed=args.seed,
        recalibrate=args.recalibrate,
        verbose=verbosity(args),
    )


def sweep_files(
    paths,
    data,
    out_dir="sweep_out",
    targeting="weight",
    fractions=None,
    probabilities=False,
    data_dir=None,
    batch_size=500,
    test_limit=None,
    recalibrate=0,
    verbose=1,
    **kwargs,
):
    """Loads `{name: path.keras}`, sweeps them on the `data` test split and
    writes `sweep.csv` and `sweep.png` in `out_dir`.

    Models saved uncompiled are compiled with sparse categorical
    cross-entropy (from logits unless `probabilities`) and accuracy.
    With `recalibrate` N > 0, the BatchNormalization statistics of each
    model are recalibrated at every fraction on the first N examples of
    the `data` training split (see `prune_sweep`; the rows'
    `recalibrated` says where they were). `kwargs` go to `prune_sweep`
    (`scope`, `block_size`, `criterion`, `exclude`, `seed`).

    Example:
    >>> sweep_files({"plain": "plain.keras"}, "mnist", test_limit=1000)
    """
    import keras

    import keras_tdrop  # noqa: F401  (registers the custom layers)
    from keras_tdrop.experiments import datasets
    from keras_tdrop.experiments.train import check_recalibrate
    from keras_tdrop.pruning.report import XLABELS
    from keras_tdrop.pruning.report import compare_sweeps
    from keras_tdrop.pruning.report import format_sweep
    from keras_tdrop.pruning.report import plot_sweeps
    from keras_tdrop.pruning.report import print_progress
    from keras_tdrop.pruning.report import write_csv
    from keras_tdrop.pruning.sweep import FRACTIONS
    from keras_tdrop.pruning.sweep import prune_sweep

    check_recalibrate(recalibrate)
    train = None
    if recalibrate:
        train = datasets.load(
            data, "train", batch_size=256, data_dir=data_dir, limit=recalibrate
        )
    test = datasets.load(
        data, "test", batch_size=batch_size, data_dir=data_dir, limit=test_limit
    )
    models = {}
    for name, path in paths.items():
        model = keras.saving.load_model(path)
        if not model.compiled or "accuracy" not in str(
            model.get_compile_config()
        ):
            model.compile(
                loss=keras.losses.SparseCategoricalCrossentropy(
                    from_logits=not probabilities
                ),
                metrics=["accuracy"],
            )
        models[name] = model
    os.makedirs(out_dir, exist_ok=True)
    plotting = can_plot("sweep.png")
    say = print if verbose else (lambda *args, **kwargs: None)
    sweeps = {}
    for name, model in models.items():
        say(f"Pruning {name}.", flush=True)
        sweeps[name] = prune_sweep(
            model,
            test,
            fractions or FRACTIONS,
            targeting,
            recalibrate=train,
            progress=print_progress if verbose else None,
            **kwargs,
        )
        say(format_sweep(sweeps[name]), flush=True)
    say("\n" + format_sweep(sweeps), flush=True)
    write_csv(compare_sweeps(sweeps), os.path.join(out_dir, "sweep.csv"))
    if plotting:
        what = f"{targeting} pruning"
        if kwargs.get("block_size"):
            what = f"N:M pruning, blocks of {kwargs['block_size']}"
        if recalibrate:
            what += f", BatchNorm recalibrated on {recalibrate} examples"
        plot_sweeps(
            sweeps,
            os.path.join(out_dir, "sweep.png"),
            title=f"{data}, {what}",
            xlabel=XLABELS[targeting],
        )
    wrote = "sweep.csv" + (" and sweep.png" if plotting else "")
    say(f"Wrote {wrote} in {out_dir}.", flush=True)
    return sweeps
