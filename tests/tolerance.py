"""The one way tests compare floats: a relative tolerance plus a floor.

A relative tolerance alone fails where the expected value is zero or near
it, and there the last bits depend on the kernel: oneDNN or Eigen, fused
or not, blocked summation in another order. So every comparison also gets
an absolute floor of `FLOOR_ULPS` float32 epsilons at the scale of the
expected values, `max(1, max|desired|)`: 64 * 1.19e-7 = 7.6e-6 at scale
one. 64 epsilons is the worst-case rounding error of a float32 sum of 64
terms (n * eps) and the typical one (sqrt(n) * eps) of a sum of 4096,
longer than any dot product in the small layers these tests build, and
still under the 1e-5 most tests assert. The default relative tolerance is
`pytest.approx`'s, 1e-6; a test passes its own `rtol` and `atol` (kept
when looser than the floor) where it means something else.

Values computed in float64 (counts, fractions, numpy references that
never touched a float32 kernel) pass `dtype="float64"` to keep a floor of
64 float64 epsilons, so an off-by-one count stays visible.

`tests/test_tolerance_discipline.py` fails on any float comparison in the
tests made other than through this module.
"""

import numpy as np
import pytest

FLOOR_ULPS = 64


def floor(desired, dtype="float32"):
    """The absolute tolerance every comparison gets at least."""
    values = np.abs(np.asarray(_numbers(desired), dtype="float64"))
    values = values[np.isfinite(values)]
    scale = max(1.0, float(values.max())) if values.size else 1.0
    return FLOOR_ULPS * float(np.finfo(dtype).eps) * scale


def assert_close(
    actual, desired, rtol=1e-6, atol=0.0, err_msg="", dtype="float32"
):
    """`np.testing.assert_allclose` with the floor added to `atol`."""
    np.testing.assert_allclose(
        actual,
        desired,
        rtol=rtol,
        atol=max(atol, floor(desired, dtype)),
        err_msg=err_msg,
    )


def close(actual, desired, rtol=1e-6, atol=0.0, dtype="float32"):
    """`np.allclose` with the floor added to `atol`, for a bool."""
    atol = max(atol, floor(desired, dtype))
    return bool(np.allclose(actual, desired, rtol=rtol, atol=atol))


def approx(expected, rel=None, abs=None, dtype="float32"):
    """`pytest.approx` with the floor added to `abs`.

    As in `pytest.approx`, `abs` alone means no relative tolerance, and
    neither means `rel=1e-6`.
    """
    if rel is None:
        rel = 0.0 if abs is not None else 1e-6
    floor_ = floor(expected, dtype)
    return pytest.approx(expected, rel=rel, abs=max(abs or 0.0, floor_))


def _numbers(value):
    if isinstance(value, dict):
        value = list(value.values())
    if isinstance(value, (list, tuple)):
        return [x for v in value for x in _numbers(v)]
    return list(np.ravel(np.asarray(value, dtype="float64")))
