"""Checks of the options of the pruning masks: scope, criterion, N:M
block size and importance scores."""

import numpy as np
from keras import ops

__all__ = ["CRITERIA", "SCOPES", "check_finite", "check_options"]

SCOPES = ("local", "global")
CRITERIA = ("magnitude", "random")


def check_options(kernels, targeting, scope, block_size, criterion, scores):
    if scope not in SCOPES:
        raise ValueError(
            f"`scope` must be one of {SCOPES}. Received: scope={scope!r}"
        )
    if criterion not in CRITERIA:
        raise ValueError(
            f"`criterion` must be one of {CRITERIA}. "
            f"Received: criterion={criterion!r}"
        )
    if block_size is not None:
        if (
            isinstance(block_size, bool)
            or not isinstance(block_size, (int, np.integer))
            or block_size < 2
        ):
            raise ValueError(
                "`block_size` must be None or an int >= 2. "
                f"Received: block_size={block_size!r}"
            )
        if targeting != "weight" or scope != "local":
            raise ValueError(
                "`block_size` (N:M structure) needs targeting='weight' and "
                f"scope='local'. Received: targeting={targeting!r}, "
                f"scope={scope!r}"
            )
    if scores is None:
        return
    if criterion != "magnitude":
        raise ValueError(
            "`scores` replaces the magnitude criterion; it cannot be "
            f"combined with criterion={criterion!r}"
        )
    if not isinstance(scores, dict):
        raise TypeError(
            "`scores` must be a dict of variable path -> array. "
            f"Received: scores={type(scores).__name__}"
        )
    paths = {k.path: tuple(k.shape) for k in kernels}
    for path in scores:
        if path not in paths:
            raise ValueError(
                f"`scores` names a variable that is not a prunable kernel. "
                f"Received: path={path!r}"
            )
    check_finite(scores, "scores for")
    for path, shape in paths.items():
        if path not in scores:
            raise ValueError(
                f"`scores` has no entry for the prunable kernel {path!r}; "
                "give one for every kernel, or exclude its layer."
            )
        got = tuple(np.shape(scores[path]))
        unit_ok = targeting == "unit" and got == (shape[-1],)
        if got != shape and not unit_ok:
            raise ValueError(
                f"The scores for {path!r} have shape {got}, the kernel has "
                f"{shape}."
            )


def check_finite(arrays, what):
    """Raises a ValueError naming the first array of `arrays` that is not
    finite.

    Args:
        arrays: dict, `{path: array}`.
        what: str, what the arrays are, for the message ("kernel").
    """
    for path, value in arrays.items():
        if not np.all(np.isfinite(ops.convert_to_numpy(value))):
            raise ValueError(
                f"The {what} {path!r} has non-finite values (NaN or Inf), "
                "which cannot be ranked. Received: "
                f"{what} {path!r} with NaN or Inf"
            )
