"""Whether the experiments can write their plots."""

import warnings

from keras_tdrop.optional_imports import require

__all__ = ["can_plot"]


def can_plot(what):
    """True if matplotlib imports; else warns that `what` will not be written.

    The warning points at the caller of the function that asks.
    """
    try:
        require("matplotlib", "plots")
    except ImportError as error:
        warnings.warn(f"{what} will not be written. {error}", stacklevel=3)
        return False
    return True
