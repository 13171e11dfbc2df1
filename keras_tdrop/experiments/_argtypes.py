"""Argument types and arguments shared by the command-line parsers.

No heavy imports: `keras-tdrop --help` stays instant.
"""

import argparse
import os


def _positive_int(text):
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def _add_data_dir(
    parser,
    help_text="TFDS data directory with prepared datasets "
    "(default: $TFDS_DATA_DIR, else TFDS' default)",
):
    parser.add_argument(
        "--data-dir", default=os.environ.get("TFDS_DATA_DIR"), help=help_text
    )


def _add_quiet(parser):
    parser.add_argument(
        "--quiet", action="store_true", help="print nothing but errors"
    )
