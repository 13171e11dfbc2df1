"""Ramp schedules: pure functions of the training step.

Each returns `(rate_fraction, target_rate_fraction)` in [0, 1], the share of
the final alpha and gamma in use at `step`.
"""

import math

__all__ = [
    "constant",
    "linear",
    "piecewise",
]


def _check_steps(name, value):
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(
            f"`{name}` must be a number. Received: {name}={value!r}"
        )
    if not value > 0 or math.isinf(value):
        raise ValueError(f"`{name}` must be > 0. Received: {name}={value!r}")


def _clip01(x):
    return min(1.0, max(0.0, x))


def piecewise(step, first_steps=20000, total_steps=40000, first_fraction=0.95):
    """for-ai/TD's ramp.

    alpha rises linearly to its final value at `total_steps`; gamma rises
    linearly to `first_fraction` of its final value at `first_steps`, then
    to all of it at `total_steps`:

        alpha(s) = alpha * min(1, s / total_steps)
        gamma(s) = 0.95 * gamma * min(1, s / first_steps)
                 + 0.05 * gamma * clip((s - first_steps)
                                       / (total_steps - first_steps), 0, 1)
    """
    _check_steps("first_steps", first_steps)
    _check_steps("total_steps", total_steps)
    if (
        isinstance(first_fraction, bool)
        or not isinstance(first_fraction, (int, float))
        or not 0.0 <= first_fraction <= 1.0
    ):
        raise ValueError(
            "`first_fraction` must be a float in [0, 1]. "
            f"Received: first_fraction={first_fraction!r}"
        )
    if first_steps > total_steps:
        raise ValueError(
            "`first_steps` must not exceed `total_steps`. Received: "
            f"first_steps={first_steps}, total_steps={total_steps}"
        )
    step = float(step)
    alpha = _clip01(step / total_steps)
    second = total_steps - first_steps
    late = (
        _clip01((step - first_steps) / second)
        if second
        else float(step >= first_steps)
    )
    gamma = (
        first_fraction * _clip01(step / first_steps)
        + (1.0 - first_fraction) * late
    )
    return alpha, gamma


def linear(step, total_steps):
    """Both alpha and gamma rise linearly to their final values."""
    _check_steps("total_steps", total_steps)
    fraction = _clip01(float(step) / total_steps)
    return fraction, fraction


def constant(step):
    """The final values from the first step."""
    del step
    return 1.0, 1.0
