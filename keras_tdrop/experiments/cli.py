"""The `keras-tdrop` command.

Each subcommand is a pair of functions registered in `_COMMANDS`: one adds
its arguments to a subparser, the other runs it. Heavy imports (Keras,
TensorFlow) happen inside the runners, so `keras-tdrop --help` is instant.
"""

import argparse
import sys

from keras_tdrop.experiments._argtypes import add_data_dir
from keras_tdrop.experiments._argtypes import add_quiet
from keras_tdrop.experiments._argtypes import add_recalibrate
from keras_tdrop.experiments._argtypes import fraction_list
from keras_tdrop.experiments._argtypes import positive_int

__all__ = ["build_parser", "main"]

PROG = "keras-tdrop"


def _unit_float(text):
    value = float(text)
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"must be in [0, 1], got {value}")
    return value


def _add_fractions(
    parser, help_text="comma-separated prune fractions (default 0,0.1,...,0.9)"
):
    parser.add_argument(
        "--fractions", type=fraction_list, default=None, help=help_text
    )


def _run_kwargs(args):
    """The arguments `_add_data_args` (and --out, --epochs) give a runner."""
    return dict(
        out_dir=args.out,
        data_dir=args.data_dir,
        epochs=args.epochs,
        batch_size=args.batch_size,
        train_limit=args.train_limit,
        test_limit=args.test_limit,
        seed=args.seed,
    )


def _add_data_args(parser):
    add_data_dir(parser)
    parser.add_argument("--batch-size", type=positive_int, default=128)
    parser.add_argument(
        "--train-limit",
        type=positive_int,
        default=None,
        help="train on the first N examples only",
    )
    parser.add_argument(
        "--test-limit",
        type=positive_int,
        default=None,
        help="evaluate on the first N examples only",
    )
    parser.add_argument("--seed", type=int, default=0)


def _add_demo(parser):
    parser.add_argument(
        "--out", default="demo_out", help="folder for demo.csv and demo.png"
    )
    parser.add_argument("--epochs", type=positive_int, default=3)
    _add_data_args(parser)
    parser.add_argument(
        "--rate",
        type=_unit_float,
        default=0.75,
        help="alpha, drop probability of targeted weights (default 0.75)",
    )
    parser.add_argument(
        "--target-rate",
        type=_unit_float,
        default=0.9,
        help="gamma, proportion of weights targeted (default 0.9)",
    )
    parser.add_argument(
        "--ramp-fraction",
        type=_unit_float,
        default=0.5,
        help="share of training over which alpha and gamma ramp up; "
        "0 for constant values (default 0.5)",
    )
    _add_fractions(parser)
    add_quiet(parser)


def _run_demo(args):
    from keras_tdrop.experiments.demo import run_demo

    run_demo(
        **_run_kwargs(args),
        rate=args.rate,
        target_rate=args.target_rate,
        ramp_fraction=args.ramp_fraction or None,
        **({"fractions": args.fractions} if args.fractions else {}),
        verbose=0 if args.quiet else 1,
    )


def _limit_or_all(text):
    return None if text == "all" else positive_int(text)


def _int_list(text):
    try:
        return tuple(positive_int(part) for part in text.split(","))
    except (ValueError, argparse.ArgumentTypeError):
        raise argparse.ArgumentTypeError(
            f"expected comma-separated ints >= 1, got {text!r}"
        ) from None


def _add_autoencoder(parser):
    parser.add_argument(
        "--out",
        default="autoencoder_out",
        help="folder for autoencoder.csv, autoencoder.png, reconstructions.png",
    )
    add_data_dir(parser)
    parser.add_argument("--latent-dim", type=positive_int, default=32)
    parser.add_argument(
        "--fixed-widths",
        type=_int_list,
        default=(2, 4, 8, 16, 32),
        help="widths of the standard autoencoders trained for comparison "
        "(default 2,4,8,16,32)",
    )
    parser.add_argument("--epochs", type=positive_int, default=3)
    parser.add_argument("--batch-size", type=positive_int, default=64)
    parser.add_argument("--learning-rate", type=float, default=2e-3)
    parser.add_argument(
        "--train-limit",
        type=_limit_or_all,
        default=2048,
        help="training images used, or 'all' (default 2048)",
    )
    parser.add_argument(
        "--test-limit",
        type=_limit_or_all,
        default=300,
        help="test images evaluated, or 'all' (default 300)",
    )
    parser.add_argument(
        "--filters",
        type=positive_int,
        default=16,
        help="conv channels (default 16; the paper's is 32)",
    )
    parser.add_argument(
        "--mode", choices=("triangular", "random"), default="triangular"
    )
    parser.add_argument(
        "--plateau-patience",
        type=positive_int,
        default=None,
        help="the paper's schedule: learning rate / 10 after this many "
        "epochs without a 2%% fall of the loss, stop at the fifth (paper: 15)",
    )
    parser.add_argument("--seed", type=int, default=0)
    add_quiet(parser)


def _run_autoencoder(args):
    from keras_tdrop.experiments.autoencoder import run_autoencoder

    run_autoencoder(
        **_run_kwargs(args),
        latent_dim=args.latent_dim,
        fixed_widths=args.fixed_widths,
        learning_rate=args.learning_rate,
        filters=args.filters,
        mode=args.mode,
        plateau_patience=args.plateau_patience,
        verbose=0 if args.quiet else 1,
    )


def _add_mobile(parser):
    parser.add_argument(
        "--out",
        default="mobile_out",
        help="folder for mobile.csv, mobile.png and the .tflite files",
    )
    parser.add_argument("--epochs", type=positive_int, default=3)
    _add_data_args(parser)
    parser.set_defaults(batch_size=64, train_limit=10000, test_limit=2000)
    _add_fractions(
        parser, "comma-separated prune fractions (default 0,0.1,...,0.7)"
    )
    parser.add_argument(
        "--latency-repeats",
        type=positive_int,
        default=500,
        help="timed LiteRT invocations per model (default 500)",
    )
    parser.add_argument(
        "--recalibrate",
        type=int,
        default=256,
        help="training images to recalibrate BatchNorm statistics on after "
        "pruning (default 256; 0: never)",
    )
    add_quiet(parser)


def _run_mobile(args):
    from keras_tdrop.experiments.mobile import run_mobile

    run_mobile(
        **_run_kwargs(args),
        **({"fractions": args.fractions} if args.fractions else {}),
        latency_repeats=args.latency_repeats,
        recalibrate=args.recalibrate,
        verbose=0 if args.quiet else 1,
    )


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
        "--width", type=float, default=None, help="resnet width (default 1)"
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
    _add_data_args(parser)
    parser.set_defaults(batch_size=None)
    parser.add_argument(
        "--learning-rate",
        type=float,
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
    _add_fractions(parser)
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
        **_run_kwargs(args),
        model=args.model,
        width=args.width,
        data=args.data,
        learning_rate=args.learning_rate,
        lr_schedule=args.lr_schedule,
        lr_warmup=args.lr_warmup,
        **({"fractions": args.fractions} if args.fractions else {}),
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
    _add_fractions(
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
        type=_unit_float,
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


_COMMANDS = {
    "demo": (
        "train a small MNIST CNN plainly and with targeted dropout, then "
        "compare their accuracy under weight pruning",
        _add_demo,
        _run_demo,
    ),
    "autoencoder": (
        "train the Triangular Dropout paper's MNIST autoencoder and compare "
        "its loss at every code width with truncated and fixed-width ones",
        _add_autoencoder,
        _run_autoencoder,
    ),
    "mobile": (
        "train a small MobileNetV2-style CIFAR-10 network, prune it by "
        "channel groups, shrink and export it: accuracy, parameters, MACs, "
        "file size and LiteRT latency per prune fraction",
        _add_mobile,
        _run_mobile,
    ),
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
    "sweep": (
        "prune saved models (MODEL.keras ...) at each fraction and evaluate "
        "them on MNIST or CIFAR-10: table, sweep.csv, sweep.png",
        lambda parser: _sweep().add_arguments(parser),
        lambda args: _sweep().run(args),
    ),
}


def _sweep():
    from keras_tdrop.experiments import sweep

    return sweep


def build_parser():
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Targeted dropout for Keras 3: experiments and tools.",
    )
    subparsers = parser.add_subparsers(
        dest="command", metavar="COMMAND", required=True
    )
    for name, (help_text, add_arguments, run) in _COMMANDS.items():
        sub = subparsers.add_parser(name, help=help_text, description=help_text)
        add_arguments(sub)
        sub.set_defaults(run=run)
    return parser


def main(argv=None):
    """Runs `keras-tdrop` with `argv` (default `sys.argv[1:]`).

    Returns the exit status: 0 on success, 2 when the data is missing (one
    line on stderr, no traceback). Usage errors found by argparse exit with
    status 2 as usual.

    Example:
    >>> main(["demo", "--epochs", "1", "--train-limit", "2000"])
    """
    args = build_parser().parse_args(argv)
    from keras_tdrop.experiments.datasets import DataUnavailableError

    try:
        args.run(args)
    except DataUnavailableError as error:
        print(f"{PROG}: error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
