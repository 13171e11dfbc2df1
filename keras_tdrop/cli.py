"""The `keras-tdrop` command.

Each subcommand is a pair of functions registered in `_COMMANDS`: one adds
its arguments to a subparser, the other runs it. Heavy imports (Keras,
TensorFlow) happen inside the runners, so `keras-tdrop --help` is instant.
"""

import argparse
import os
import sys

PROG = "keras-tdrop"


def _positive_int(text):
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def _unit_float(text):
    value = float(text)
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"must be in [0, 1], got {value}")
    return value


def _fraction_list(text):
    try:
        values = tuple(_unit_float(part) for part in text.split(","))
    except argparse.ArgumentTypeError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated fractions in [0, 1], got {text!r}"
        ) from None
    return values


def _add_data_args(parser):
    parser.add_argument(
        "--data-dir",
        default=os.environ.get("TFDS_DATA_DIR"),
        help="TFDS data directory with prepared datasets "
        "(default: $TFDS_DATA_DIR, else TFDS' default)",
    )
    parser.add_argument("--batch-size", type=_positive_int, default=128)
    parser.add_argument(
        "--train-limit",
        type=_positive_int,
        default=None,
        help="train on the first N examples only",
    )
    parser.add_argument(
        "--test-limit",
        type=_positive_int,
        default=None,
        help="evaluate on the first N examples only",
    )
    parser.add_argument("--seed", type=int, default=0)


def _add_demo(parser):
    parser.add_argument(
        "--out", default="demo_out", help="folder for demo.csv and demo.png"
    )
    parser.add_argument("--epochs", type=_positive_int, default=3)
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
    parser.add_argument(
        "--fractions",
        type=_fraction_list,
        default=None,
        help="comma-separated prune fractions (default 0,0.1,...,0.9)",
    )
    parser.add_argument(
        "--quiet", action="store_true", help="print nothing but errors"
    )


def _run_demo(args):
    from keras_tdrop.experiments.demo import run_demo

    run_demo(
        out_dir=args.out,
        data_dir=args.data_dir,
        epochs=args.epochs,
        batch_size=args.batch_size,
        train_limit=args.train_limit,
        test_limit=args.test_limit,
        rate=args.rate,
        target_rate=args.target_rate,
        ramp_fraction=args.ramp_fraction or None,
        **({"fractions": args.fractions} if args.fractions else {}),
        seed=args.seed,
        verbose=0 if args.quiet else 1,
    )


_COMMANDS = {
    "demo": (
        "train a small MNIST CNN plainly and with targeted dropout, then "
        "compare their accuracy under weight pruning",
        _add_demo,
        _run_demo,
    ),
}


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
    from keras_tdrop.datasets import DataUnavailableError

    try:
        args.run(args)
    except DataUnavailableError as error:
        print(f"{PROG}: error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
