"""Argument checks shared by the reference models."""

__all__ = ["check_positive"]


def check_positive(name, value, kind=int):
    """Raises a ValueError unless `value` is a positive `kind` (int or
    float; never a bool)."""
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, float) if kind is float else int)
        or value <= 0
    ):
        raise ValueError(
            f"`{name}` must be a positive {kind.__name__}. "
            f"Received: {name}={value!r}"
        )
