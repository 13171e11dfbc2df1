"""Ordered channels: how many of a channel group's channels a width keeps.

One rule, read by ordered channel dropout in training
(`ModelOrderedDropout`), by `ordered_masks` and by `truncate`, so that the
channels a training step drops at width w are exactly those truncation
cuts at w: a group of n channels keeps its first
`kept_channels(n, w, round_to)`, in the order of the channel graph (the
order of the first writing layer's output channels).
"""

import numbers

from keras import ops

__all__ = [
    "check_round_to",
    "check_width",
    "kept_channels",
]

# Widths such as 0.3 * 10 = 3.0000000000000004 keep 3 channels, not 4.
_SLACK = 1e-6


def check_width(width, name="width"):
    """`width` as a float in (0, 1], or a ValueError naming `name`."""
    if (
        isinstance(width, bool)
        or not isinstance(width, numbers.Real)
        or not 0.0 < float(width) <= 1.0
    ):
        raise ValueError(
            f"`{name}` must be a fraction in (0, 1]. Received: {name}={width!r}"
        )
    return float(width)


def check_round_to(round_to):
    """`round_to` as an int >= 1, or a ValueError."""
    if (
        isinstance(round_to, bool)
        or not isinstance(round_to, numbers.Integral)
        or round_to < 1
    ):
        raise ValueError(
            f"`round_to` must be an int >= 1. Received: round_to={round_to!r}"
        )
    return int(round_to)


def kept_channels(n, width, round_to=1):
    """The number of a group's `n` channels that `width` keeps.

    `ceil(width * n)` rounded up to a multiple of `round_to` (the channel
    counts mobile kernels prefer), at least `min(round_to, n)` and at most
    `n`. `width` may be a float or a scalar tensor (a width drawn in
    training); the result is then an int32 tensor.

    Example:
    >>> kept_channels(16, 0.25)
    4
    >>> kept_channels(20, 0.25, round_to=8)
    8
    """
    if not isinstance(width, numbers.Real):
        steps = ops.ceil(ops.cast(width, "float32") * (n / round_to) - _SLACK)
        kept = ops.cast(steps, "int32") * round_to
        return ops.clip(kept, min(round_to, n), n)
    steps = -int(-(float(width) * n / round_to - _SLACK) // 1)
    return int(min(n, max(min(round_to, n), steps * round_to)))
