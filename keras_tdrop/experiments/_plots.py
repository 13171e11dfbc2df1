"""Whether the experiments can write their plots."""

import warnings


def can_plot(what):
    """True if matplotlib imports; else warns that `what` will not be written.

    The warning points at the caller of the function that asks.
    """
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        warnings.warn(
            f"matplotlib is not installed; {what} will not be written. "
            "Install it with `pip install keras-tdrop[plots]`.",
            stacklevel=3,
        )
        return False
    return True
