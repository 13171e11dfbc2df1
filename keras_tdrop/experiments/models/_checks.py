"""Argument checks shared by the reference models."""

__all__ = ["_check_positive"]


def _check_positive(name, value, kind=int):
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, float) if kind is float else int)
        or value <= 0
    ):
        raise ValueError(
            f"`{name}` must be a positive {kind.__name__}. "
            f"Received: {name}={value!r}"
        )
