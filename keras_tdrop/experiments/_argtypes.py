"""Argument types and arguments shared by the command-line parsers.

No heavy imports: `keras-tdrop --help` stays instant.
"""

import argparse
import os

__all__ = [
    "add_data_dir",
    "add_quiet",
    "add_recalibrate",
    "fraction_list",
    "nonnegative_int",
    "positive_int",
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
