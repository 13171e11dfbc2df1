"""The `keras-tdrop` command.

Each subcommand is a pair of functions registered in `_COMMANDS` (the
`COMMANDS` of `cli_demos` and `cli_runs`, then `sweep`): one adds its
arguments to a subparser, the other runs it. Heavy imports (Keras,
TensorFlow) happen inside the runners, so `keras-tdrop --help` is instant.
"""

import argparse
import sys

from keras_tdrop.experiments.cli_demos import COMMANDS as DEMOS
from keras_tdrop.experiments.cli_runs import COMMANDS as RUNS

__all__ = ["build_parser", "main"]

PROG = "keras-tdrop"


_COMMANDS = {
    **DEMOS,
    **RUNS,
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
