"""Ramp schedules against the for-ai/TD formula (docs/REFERENCE.md)."""

from fractions import Fraction

import pytest

from keras_tdrop import schedules
from tests.tolerance import approx


def clip01(x):
    return min(Fraction(1), max(Fraction(0), x))


def for_ai_ramp(step, first=20000, total=40000, first_fraction="0.95"):
    """alpha(s) = min(1, s/total); gamma(s) = 0.95 min(1, s/first)
    + 0.05 clip((s - first) / (total - first), 0, 1), as exact fractions."""
    s, f = Fraction(step), Fraction(first_fraction)
    alpha = clip01(s / total)
    gamma = f * clip01(s / first) + (1 - f) * clip01(
        (s - first) / (total - first)
    )
    return alpha, gamma


@pytest.mark.parametrize(
    "step, alpha, gamma",
    [
        (0, 0, 0),
        (10000, Fraction(1, 4), Fraction(475, 1000)),
        (20000, Fraction(1, 2), Fraction(95, 100)),
        (30000, Fraction(3, 4), Fraction(975, 1000)),
        (40000, 1, 1),
        (50000, 1, 1),
    ],
)
def test_piecewise_reference_ramp(step, alpha, gamma):
    assert for_ai_ramp(step) == (alpha, gamma)
    got = schedules.piecewise(step)
    assert got == approx(
        (float(alpha), float(gamma)), abs=1e-12, dtype="float64"
    )


@pytest.mark.parametrize("step", [0, 1, 777, 5000, 19999, 20001, 33333, 39999])
def test_piecewise_matches_formula_between_knots(step):
    expected = tuple(float(x) for x in for_ai_ramp(step))
    assert schedules.piecewise(step) == approx(
        expected, abs=1e-12, dtype="float64"
    )


@pytest.mark.parametrize(
    "first, total, fraction",
    [(100, 400, "0.95"), (10, 10, "0.95"), (300, 1000, "0.5"), (1, 2, "1")],
)
def test_piecewise_configurable(first, total, fraction):
    for step in [0, first // 2, first, (first + total) // 2, total, 2 * total]:
        got = schedules.piecewise(step, first, total, float(fraction))
        if first == total:  # the second ramp has no length: a jump at first
            s = Fraction(step)
            alpha = clip01(s / total)
            f = Fraction(fraction)
            gamma = f * clip01(s / first) + (1 - f) * (s >= first)
        else:
            alpha, gamma = for_ai_ramp(step, first, total, fraction)
        assert got == approx(
            (float(alpha), float(gamma)), abs=1e-12, dtype="float64"
        )


def test_piecewise_is_monotone_and_bounded():
    values = [schedules.piecewise(s, 50, 200) for s in range(-10, 260)]
    for (a0, g0), (a1, g1) in zip(values, values[1:]):
        assert 0.0 <= a0 <= a1 <= 1.0
        assert 0.0 <= g0 <= g1 <= 1.0
    assert values[0] == (0.0, 0.0)
    assert values[-1] == (1.0, 1.0)


@pytest.mark.parametrize(
    "step, expected",
    [(-5, 0.0), (0, 0.0), (250, 0.25), (500, 0.5), (1000, 1.0), (5000, 1.0)],
)
def test_linear(step, expected):
    assert schedules.linear(step, 1000) == approx(
        (expected, expected), dtype="float64"
    )


@pytest.mark.parametrize("step", [0, 1, 20000, 10**9])
def test_constant(step):
    assert schedules.constant(step) == (1.0, 1.0)


@pytest.mark.parametrize(
    "kwargs, name",
    [
        ({"first_steps": 0}, "first_steps"),
        ({"first_steps": -1}, "first_steps"),
        ({"total_steps": 0}, "total_steps"),
        ({"total_steps": -100}, "total_steps"),
        ({"total_steps": float("inf")}, "total_steps"),
        ({"total_steps": float("nan")}, "total_steps"),
        ({"first_steps": 500, "total_steps": 400}, "first_steps"),
    ],
)
def test_piecewise_bad_steps_raise(kwargs, name):
    with pytest.raises(ValueError, match=name):
        schedules.piecewise(0, **kwargs)


@pytest.mark.parametrize("total", [0, -1, float("inf")])
def test_linear_bad_steps_raise(total):
    with pytest.raises(ValueError, match="total_steps"):
        schedules.linear(0, total)


@pytest.mark.parametrize("value", ["100", None, True])
def test_non_numeric_steps_raise(value):
    with pytest.raises(TypeError, match="total_steps"):
        schedules.linear(0, value)
    with pytest.raises(TypeError, match="first_steps"):
        schedules.piecewise(0, first_steps=value)
