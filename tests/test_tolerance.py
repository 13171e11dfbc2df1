import numpy as np
import pytest

from tests.tolerance import FLOOR_ULPS
from tests.tolerance import approx
from tests.tolerance import assert_close
from tests.tolerance import close
from tests.tolerance import floor

EPS32 = float(np.finfo("float32").eps)
EPS64 = float(np.finfo("float64").eps)


@pytest.mark.parametrize(
    "desired, expected",
    [
        (0.0, FLOOR_ULPS * EPS32),
        (0.5, FLOOR_ULPS * EPS32),
        ([-3.0, 2.0], 3 * FLOOR_ULPS * EPS32),
        ([np.nan, np.inf, 10.0], 10 * FLOOR_ULPS * EPS32),
        (np.zeros((0, 3)), FLOOR_ULPS * EPS32),
        ({"a": 1.0, "b": (4.0, -8.0)}, 8 * FLOOR_ULPS * EPS32),
    ],
)
def test_floor_scales_with_the_largest_finite_value(desired, expected):
    assert floor(desired) == expected


def test_floor_in_float64():
    assert floor(2.0, "float64") == 2 * FLOOR_ULPS * EPS64


def test_passes_within_the_floor_near_zero():
    # A relative tolerance alone passes no error at zero: 1e-7 > 1e-5 * 0.
    assert_close(1e-7, 0.0, rtol=1e-5)
    assert close(np.full(3, 1e-7), np.zeros(3))
    assert 1e-7 == approx(0.0)
    assert 1e-7 == approx(0.0, rel=1e-5)


def test_floor_follows_the_scale():
    desired = np.array([1000.0, 0.0], "float32")
    assert_close(desired + [0.005, 0.005], desired)
    with pytest.raises(AssertionError):
        assert_close(desired + [0.0, 0.1], desired)


@pytest.mark.parametrize("error", [1e-4, 1e-3, 0.5])
def test_fails_on_a_real_difference(error):
    desired = np.linspace(-1, 1, 7).astype("float32")
    actual = desired.copy()
    actual[3] += error
    with pytest.raises(AssertionError, match="Mismatched elements: 1 / 7"):
        assert_close(actual, desired, rtol=1e-5, atol=1e-5)
    assert not close(actual, desired)
    assert list(actual) != approx(list(desired))


def test_explicit_tolerances_are_kept_when_looser():
    assert_close(1.05, 1.0, rtol=0.1)
    assert_close(0.05, 0.0, atol=0.1)
    assert 1.05 == approx(1.0, rel=0.1)
    assert 0.05 == approx(0.0, abs=0.1)
    with pytest.raises(AssertionError):
        assert_close(1.2, 1.0, rtol=0.1)
    assert 1.2 != approx(1.0, rel=0.1)


def test_err_msg_is_passed_on():
    with pytest.raises(AssertionError, match="layer fc1"):
        assert_close([1.0], [2.0], err_msg="layer fc1")


def test_approx_abs_alone_means_no_relative_tolerance():
    # As in pytest.approx: 1e6 + 1 is within rel=1e-6, but not within
    # abs=0.5 (the float64 floor at this scale is 1.4e-8).
    assert 1e6 + 1 == approx(1e6)
    assert 1e6 + 1 != approx(1e6, abs=0.5, dtype="float64")


def test_float64_floor_sees_an_off_by_one_count():
    assert 22271 / 223232 == approx(22272 / 223232)  # float32: invisible
    assert 22271 / 223232 != approx(22272 / 223232, dtype="float64")


def test_approx_of_structures():
    assert (0.5, 0.25) == approx((0.5, 0.25 + 1e-7))
    assert [0.1, 0.2] != approx([0.1, 0.3])
    assert {"a": 1.0} == approx({"a": 1.0 + 1e-7})
