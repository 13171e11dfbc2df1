"""Argument types, arguments and runner keywords shared by the parsers.

No heavy imports: `keras-tdrop --help` stays instant.
"""

import argparse
import os

__all__ = [
    "add_data_args",
    "add_data_dir",
    "add_fractions",
    "add_limit",
    "add_quiet",
    "add_recalibrate",
    "fraction_list",
    "fractions_kwargs",
    "int_list",
    "limit_or_all",
    "nonnegative_int",
    "positive_float",
    "positive_int",
    "run_kwargs",
    "unit_float",
    "verbosity",
]


def positive_int(text):
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def nonnegative_int(text):
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {value}")
    return value


def add_recalibrate(parser, default):
    """`--recalibrate N`: training examples to recalibrate BatchNorm on."""
    parser.add_argument(
        "--recalibrate",
        type=nonnegative_int,
        default=default,
        metavar="N",
        help="for models with BatchNorm: recalibrate its statistics at "
        f"every prune fraction on N training examples (default {default}; "
        "0: never)",
    )


def fraction_list(text):
    """The one parser of `--fractions` (every subcommand that takes it)."""
    from keras_tdrop.pruning.sweep import check_fractions

    try:
        return check_fractions(text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated fractions in [0, 1], got {text!r}"
        ) from None


def add_data_dir(
    parser,
    help_text="TFDS data directory with prepared datasets "
    "(default: $TFDS_DATA_DIR, else TFDS' default)",
):
    parser.add_argument(
        "--data-dir", default=os.environ.get("TFDS_DATA_DIR"), help=help_text
    )


def add_quiet(parser):
    parser.add_argument(
        "--quiet", action="store_true", help="print nothing but errors"
    )


def positive_float(text):
    value = float(text)
    if not 0.0 < value < float("inf"):
        raise argparse.ArgumentTypeError(f"must be > 0, got {value}")
    return value


def unit_float(text):
    value = float(text)
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"must be in [0, 1], got {value}")
    return value


def add_fractions(
    parser, help_text="comma-separated prune fractions (default 0,0.1,...,0.9)"
):
    parser.add_argument(
        "--fractions", type=fraction_list, default=None, help=help_text
    )


def run_kwargs(args):
    """The arguments `add_data_args` (and --out, --epochs) give a runner."""
    return dict(
        out_dir=args.out,
        data_dir=args.data_dir,
        epochs=args.epochs,
        batch_size=args.batch_size,
        train_limit=args.train_limit,
        test_limit=args.test_limit,
        seed=args.seed,
    )


def add_data_args(parser):
    add_data_dir(parser)
    parser.add_argument("--batch-size", type=positive_int, default=128)
    add_limit(parser, "train", "train on the first N examples only")
    add_limit(parser, "test", "evaluate on the first N examples only")
    parser.add_argument("--seed", type=int, default=0)


def add_limit(parser, split, help_text):
    """`--{split}-limit N`: the first N examples of the split only."""
    parser.add_argument(
        f"--{split}-limit", type=positive_int, default=None, help=help_text
    )


def limit_or_all(text):
    return None if text == "all" else positive_int(text)


def int_list(text):
    try:
        return tuple(positive_int(part) for part in text.split(","))
    except (ValueError, argparse.ArgumentTypeError):
        raise argparse.ArgumentTypeError(
            f"expected comma-separated ints >= 1, got {text!r}"
        ) from None


def fractions_kwargs(args):
    """`{"fractions": ...}` where `--fractions` was given, else `{}`: the
    runner's own default applies."""
    return {"fractions": args.fractions} if args.fractions else {}


def verbosity(args):
    """The `verbose` of a runner: 0 with `--quiet`, else 1."""
    return 0 if args.quiet else 1
