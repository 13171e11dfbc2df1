"""The demonstration subcommands of `keras-tdrop`: `demo`, `autoencoder`,
`mobile`.

Each is a small run that trains and compares in minutes: `COMMANDS` maps its
name to its help, the function adding its arguments and its runner.
"""

import argparse

from keras_tdrop.experiments._argtypes import add_data_args
from keras_tdrop.experiments._argtypes import add_data_dir
from keras_tdrop.experiments._argtypes import add_fractions
from keras_tdrop.experiments._argtypes import add_quiet
from keras_tdrop.experiments._argtypes import fraction_list
from keras_tdrop.experiments._argtypes import fractions_kwargs
from keras_tdrop.experiments._argtypes import int_list
from keras_tdrop.experiments._argtypes import limit_or_all
from keras_tdrop.experiments._argtypes import positive_float
from keras_tdrop.experiments._argtypes import positive_int
from keras_tdrop.experiments._argtypes import run_kwargs
from keras_tdrop.experiments._argtypes import unit_float
from keras_tdrop.experiments._argtypes import verbosity

__all__ = ["COMMANDS"]


def _add_demo(parser):
    parser.add_argument(
        "--out", default="demo_out", help="folder for demo.csv and demo.png"
    )
    parser.add_argument("--epochs", type=positive_int, default=3)
    add_data_args(parser)
    parser.add_argument(
        "--rate",
        type=unit_float,
        default=0.75,
        help="alpha, drop probability of targeted weights (default 0.75)",
    )
    parser.add_argument(
        "--target-rate",
        type=unit_float,
        default=0.9,
        help="gamma, proportion of weights targeted (default 0.9)",
    )
    parser.add_argument(
        "--ramp-fraction",
        type=unit_float,
        default=0.5,
        help="share of training over which alpha and gamma ramp up; "
        "0 for constant values (default 0.5)",
    )
    add_fractions(parser)
    add_quiet(parser)


def _run_demo(args):
    from keras_tdrop.experiments.demo import run_demo

    run_demo(
        **run_kwargs(args),
        rate=args.rate,
        target_rate=args.target_rate,
        ramp_fraction=args.ramp_fraction or None,
        **fractions_kwargs(args),
        verbose=verbosity(args),
    )


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
        type=int_list,
        default=(2, 4, 8, 16, 32),
        help="widths of the standard autoencoders trained for comparison "
        "(default 2,4,8,16,32)",
    )
    parser.add_argument("--epochs", type=positive_int, default=3)
    parser.add_argument("--batch-size", type=positive_int, default=64)
    parser.add_argument("--learning-rate", type=positive_float, default=2e-3)
    parser.add_argument(
        "--train-limit",
        type=limit_or_all,
        default=2048,
        help="training images used, or 'all' (default 2048)",
    )
    parser.add_argument(
        "--test-limit",
        type=limit_or_all,
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
        **run_kwargs(args),
        latent_dim=args.latent_dim,
        fixed_widths=args.fixed_widths,
        learning_rate=args.learning_rate,
        filters=args.filters,
        mode=args.mode,
        plateau_patience=args.plateau_patience,
        verbose=verbosity(args),
    )


def _method_list(text):
    from keras_tdrop.experiments.mobile_methods import check_methods

    try:
        return check_methods(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def _seed_list(text):
    try:
        seeds = [int(part) for part in text.split(",")]
    except ValueError:
        seeds = []
    if not seeds or min(seeds) < 0:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated ints >= 0, got {text!r}"
        )
    return seeds


def _ramp(text):
    parts = text.split(",")
    try:
        values = tuple(float(p) for p in parts)
    except ValueError:
        values = ()
    if len(values) != 2 or not all(0.0 < v <= 1.0 for v in values):
        raise argparse.ArgumentTypeError(
            "expected FIRST,TOTAL fractions of training in (0, 1], "
            f"got {text!r}"
        )
    return values


def _add_mobile(parser):
    parser.add_argument(
        "--out",
        default="mobile_out",
        help="folder of the run folders; the table and plot go to OUT/compare",
    )
    parser.add_argument(
        "--method",
        type=_method_list,
        default=["none", "targeted"],
        help="comma-separated methods: none, targeted, slimming, narrow, "
        "finetune, triangular (default none,targeted)",
    )
    parser.add_argument(
        "--seeds",
        type=_seed_list,
        default=[0],
        help="comma-separated seeds, one run of each method per seed "
        "(default 0)",
    )
    parser.add_argument(
        "--scale",
        choices=("smoke", "search", "converged"),
        default="smoke",
        help="converged: CIFAR-10 45k/5k train/validation, 12 epochs, about "
        "an hour per plain run on one CPU core; search: the same cut to 3 "
        "epochs, for choosing settings on the validation split; smoke: "
        "seconds (default)",
    )
    add_fractions(
        parser, "comma-separated prune fractions (default 0,0.25,0.5,0.7)"
    )
    parser.add_argument(
        "--widths",
        type=fraction_list,
        default=None,
        help="prune fractions whose widths `narrow` trains from scratch "
        "(default 0.5)",
    )
    parser.add_argument("--rate", type=unit_float, help="targeted: alpha")
    parser.add_argument(
        "--target-rate", type=unit_float, help="targeted: gamma"
    )
    parser.add_argument(
        "--ramp",
        type=_ramp,
        help="targeted, triangular: FIRST,TOTAL fractions of the ramp",
    )
    parser.add_argument(
        "--min-width",
        type=unit_float,
        help="triangular: the narrowest width trained (default 0.25)",
    )
    parser.add_argument(
        "--ordered-mode",
        choices=("sandwich", "uniform", "triangular"),
        help="triangular: how each step's widths are drawn (default "
        "sandwich: full, narrowest and one random width per step)",
    )
    parser.add_argument(
        "--clean-steps",
        type=float,
        help="targeted: fraction of steps without drops, on which alone "
        "BatchNorm statistics learn (default 0)",
    )
    parser.add_argument(
        "--l1", type=float, help="slimming: the L1 coefficient on gamma"
    )
    add_data_dir(parser)
    add_quiet(parser)


def _run_mobile(args):
    from keras_tdrop.experiments.mobile import run_mobile

    params = {
        "targeted": {
            k: v
            for k, v in (
                ("rate", args.rate),
                ("target_rate", args.target_rate),
                ("ramp", args.ramp),
                ("clean_steps", args.clean_steps),
            )
            if v is not None
        },
        "slimming": {} if args.l1 is None else {"l1": args.l1},
        "triangular": {
            k: v
            for k, v in (
                ("min_width", args.min_width),
                ("mode", args.ordered_mode),
                ("ramp", args.ramp),
            )
            if v is not None
        },
    }
    kwargs = {"widths": args.widths} if args.widths else {}
    run_mobile(
        args.out,
        methods=args.method,
        seeds=args.seeds,
        scale=args.scale,
        # --ramp serves targeted and triangular: only the methods run.
        params={k: v for k, v in params.items() if v and k in args.method},
        data_dir=args.data_dir,
        verbose=verbosity(args),
        **fractions_kwargs(args),
        **kwargs,
    )


COMMANDS = {
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
        "compare training methods (plain, group unit targeted dropout, "
        "Network Slimming, narrow from scratch, prune then fine-tune) on a "
        "MobileNetV2-style CIFAR-10 network, each pruned by channel groups, "
        "shrunk and exported: LiteRT accuracy against latency and MACs",
        _add_mobile,
        _run_mobile,
    ),
}
