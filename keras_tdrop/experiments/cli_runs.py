"""The subcommands of `keras-tdrop` for the paper's runs: `train`, `compare`,
`analyze`.

`COMMANDS` maps each name to its help, the function adding its arguments
and its runner.
"""

from keras_tdrop.experiments._argtypes import add_data_args
from keras_tdrop.experiments._argtypes import add_data_dir
from keras_tdrop.experiments._argtypes import add_fractions
from keras_tdrop.experiments._argtypes import add_quiet
from keras_tdrop.experiments._argtypes import add_recalibrate
from keras_tdrop.experiments._argtypes import fractions_kwargs
from keras_tdrop.experiments._argtypes import positive_float
from keras_tdrop.experiments._argtypes import positive_int
from keras_tdrop.experiments._argtypes import run_kwargs
from keras_tdrop.experiments._argtypes import unit_float

__all__ = ["COMMANDS"]


def _add_train(parser):
    parser.add_argument(
        "experiment",
        help="a named experiment (keras_tdrop.experiments.registry), e.g. "
        "none, targeted_weight_0.66_0.75, ramping_weight, "
        "random_prune_weight_0.9, toy_targeted; 'list' prints them all",
    )
    parser.add_argument(
        "--out", default=None, help="run folder (default runs/EXP_MODEL)"
    )
    parser.add_argument(
        "--model",
        default=None,
        help="resnet{depth} (resnet8, resnet20, resnet32), toy_mlp, "
        "mnist_cnn or mnist_mlp (default: the experiment's, else resnet32)",
    )
    parser.add_argument(
        "--width",
        type=positive_float,
        default=None,
        help="resnet width (default 1)",
    )
    parser.add_argument(
        "--data", choices=("cifar10", "mnist"), default="cifar10"
    )
    parser.add_argument(
        "--epochs",
        type=positive_int,
        default=None,
        help="training epochs (default: the recipe's, 256)",
    )
    add_data_args(parser)
    parser.set_defaults(batch_size=None)
    parser.add_argument(
        "--learning-rate",
        type=positive_float,
        default=None,
        help="initial learning rate (default: the recipe's, 0.4)",
    )
    parser.add_argument(
        "--lr-schedule",
        choices=("step", "cosine"),
        default=None,
        help="learning-rate schedule (default: the recipe's, step: /10 at "
        "40%%, 60%% and 80%% of the run); cosine: to 0 over the run",
    )
    parser.add_argument(
        "--lr-warmup",
        type=float,
        default=None,
        help="fraction of the run's steps with a linear warm-up (cosine "
        "only; default 0)",
    )
    add_fractions(parser)
    add_recalibrate(parser, 2000)
    add_quiet(parser)
    parser.add_argument(
        "--epoch-lines",
        action="store_true",
        help="one line per epoch instead of progress bars (for log files)",
    )


def _run_train(args):
    from keras_tdrop.experiments import registry

    if args.experiment == "list":
        for name in registry.names():
            print(f"{name:28s} {registry.EXPERIMENTS[name]['description']}")
        return
    from keras_tdrop.experiments.train import train

    train(
        args.experiment,
        **run_kwargs(args),
        model=args.model,
        width=args.width,
        data=args.data,
        learning_rate=args.learning_rate,
        lr_schedule=args.lr_schedule,
        lr_warmup=args.lr_warmup,
        **fractions_kwargs(args),
        recalibrate=args.recalibrate,
        verbose=0 if args.quiet else (2 if args.epoch_lines else 1),
    )


def _add_compare(parser):
    parser.add_argument(
        "runs",
        nargs="*",
        help="finished run folders; runs of one experiment with distinct "
        "seeds (config.json, or folders named EXPERIMENT-sSEED) are "
        "aggregated: mean +- sd over the seeds",
    )
    parser.add_argument(
        "--results",
        default=None,
        help="a folder of run folders (e.g. docs/results/mnist_mlp): "
        "every run folder in it, added to RUNS",
    )
    parser.add_argument(
        "--out",
        default=None,
        help="folder for compare.txt, compare.png and the "
        "compare/summary/overlap_{weight,unit}.csv files",
    )
    add_fractions(
        parser, "comma-separated prune fractions to show (default: all)"
    )
    parser.add_argument(
        "--recalibrated",
        action="store_true",
        help="the sweeps with BatchNorm recalibrated "
        "(sweep_{weight,unit}_recalibrated.csv; with --results, the run "
        "folders that have them)",
    )


def _run_compare(args):
    from keras_tdrop.experiments.compare import compare
    from keras_tdrop.experiments.compare import find_runs

    runs = list(args.runs)
    if args.results is not None:
        runs += find_runs(args.results, recalibrated=args.recalibrated)
    compare(
        runs,
        out=args.out,
        fractions=args.fractions,
        recalibrated=args.recalibrated,
    )


def _add_analyze(parser):
    parser.add_argument("runs", nargs="+", help="finished run folders")
    parser.add_argument(
        "--fraction",
        type=unit_float,
        default=0.75,
        help="prune fraction of the Eq. 3 estimate (default 0.75)",
    )
    parser.add_argument(
        "--out", default=None, help="folder for table1.csv and figure1.png"
    )
    parser.add_argument(
        "--block-size",
        type=positive_int,
        default=200,
        help="weights in the theta*H*theta block of figure1.png",
    )
    add_data_dir(parser, "TFDS data directory (default: $TFDS_DATA_DIR)")


def _run_analyze(args):
    from keras_tdrop.experiments.analyze import analyze

    analyze(
        args.runs,
        fraction=args.fraction,
        out=args.out,
        block_size=args.block_size,
        data_dir=args.data_dir,
    )


COMMANDS = {
    "train": (
        "train a named experiment of the Targeted Dropout paper into a run "
        "folder, then sweep its weight and unit pruning",
        _add_train,
        _run_train,
    ),
    "compare": (
        "print the paper-style tables of finished runs (mean +- sd over "
        "seeds, compression, speed-up, overlapping ranges) and plot their "
        "pruning curves together, with +- sd bands",
        _add_compare,
        _run_compare,
    ),
    "analyze": (
        "the paper's Table 1 and Figure 1 for trained runs: estimated "
        "(Eq. 3, Hessian-vector products) and measured loss change of "
        "pruning, accuracy before and after",
        _add_analyze,
        _run_analyze,
    ),
}
