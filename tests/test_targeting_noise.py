"""Unit-targeting semantics (`noise`, `rescale`) against numpy.

Over many draws the mean effective kernel must be the dense kernel when the
survivors are rescaled, and the dense kernel minus alpha times its targeted
part when not; with `noise="column"` a targeted unit is dropped whole.
"""

import numpy as np
import pytest
from keras import ops

from keras_tdrop import targeting as T
from tests.tolerance import assert_close

DRAWS = 4000


def _kernel():
    rng = np.random.default_rng(3)
    # 8 columns of distinct norms, so the targeted set is unambiguous.
    scales = np.linspace(0.5, 4.0, 8, dtype="float32")
    return (rng.normal(size=(3, 3, 2, 8)) * scales).astype("float32")


def _np_targeted_columns(kernel, gamma):
    norms = np.sqrt((kernel.reshape(-1, kernel.shape[-1]) ** 2).sum(0))
    k = int(np.floor(gamma * kernel.shape[-1]))
    targeted = np.zeros(kernel.shape[-1], bool)
    targeted[np.argsort(norms, kind="stable")[:k]] = True
    return targeted


def _draw(kernel, noise, rescale, alpha=0.5, gamma=0.5, calls=20):
    """DRAWS independent draws: each call gets `DRAWS // calls` copies of
    the kernel side by side as extra columns (their norms keep the order,
    so the copies of the same columns are targeted) and is split back."""
    copies = DRAWS // calls
    tiled = np.tile(kernel, (1,) * (kernel.ndim - 1) + (copies,))
    out = []
    for i in range(calls):
        drawn = T.targeted_dropout(
            tiled,
            alpha,
            gamma,
            "unit",
            training=True,
            seed=i,
            noise=noise,
            rescale=rescale,
        )
        drawn = ops.convert_to_numpy(drawn)
        drawn = drawn.reshape(kernel.shape[:-1] + (copies, kernel.shape[-1]))
        out.append(np.moveaxis(drawn, -2, 0))
    return np.concatenate(out)


@pytest.mark.parametrize("noise", ["element", "column"])
@pytest.mark.parametrize("rescale", [False, True])
def test_expected_kernel(noise, rescale):
    kernel = _kernel()
    alpha = 0.5
    draws = _draw(kernel, noise, rescale, alpha)
    targeted = _np_targeted_columns(kernel, 0.5)
    assert targeted.sum() == 4
    # Untargeted columns never change.
    np.testing.assert_array_equal(
        draws[..., ~targeted],
        np.broadcast_to(kernel[..., ~targeted], draws[..., ~targeted].shape),
    )
    expected = kernel.copy()
    if not rescale:
        expected[..., targeted] *= 1 - alpha
    mean = draws.mean(0)
    # Each mean is of DRAWS Bernoulli(1/2) draws times w (times 2 when
    # rescaled): standard error |w| * s / sqrt(DRAWS); 5 standard errors,
    # and 5 / sqrt(#columns drawn at once) more for column noise, where the
    # draws of one column are shared.
    s = 1.0 if rescale else 0.5
    se = np.abs(kernel) * s / np.sqrt(DRAWS)
    assert np.all(np.abs(mean - expected) <= 5 * se + 1e-6)
    # The drop rate of targeted elements is alpha.
    dropped = (draws[..., targeted] == 0).mean()
    assert abs(dropped - alpha) < 5 * 0.5 / np.sqrt(DRAWS)
    if rescale:
        kept = draws[..., targeted][draws[..., targeted] != 0]
        ratio = (
            kept
            / np.broadcast_to(
                kernel[..., targeted], draws[..., targeted].shape
            )[draws[..., targeted] != 0]
        )
        assert_close(ratio, 1 / (1 - alpha), rtol=1e-6)


def test_column_noise_drops_whole_units():
    kernel = _kernel()
    draws = _draw(kernel, "column", False)
    targeted = _np_targeted_columns(kernel, 0.5)
    cols = draws.reshape(len(draws), -1, 8)[..., targeted]
    zero = cols == 0
    # Every targeted column is all zero or all kept, in every draw.
    assert np.all(zero.all(1) | (~zero).all(1))
    # Element noise does not: some targeted column is partly dropped.
    mixed = _draw(kernel, "element", False)[:50].reshape(50, -1, 8)
    partial = (mixed[..., targeted] == 0).any(1) & (
        mixed[..., targeted] != 0
    ).any(1)
    assert partial.any()


def test_inference_and_exact_counts_unchanged():
    kernel = _kernel()
    for noise in ("element", "column"):
        out = T.targeted_dropout(
            kernel, 0.5, 0.5, "unit", noise=noise, rescale=True
        )
        np.testing.assert_array_equal(ops.convert_to_numpy(out), kernel)
    mask = ops.convert_to_numpy(T.targeted_mask(kernel, 0.5, "unit"))
    assert mask.reshape(-1, 8).all(0).sum() == 4


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"noise": "row"}, "noise='row'"),
        ({"noise": "column", "targeting": "weight"}, "targeting='weight'"),
        ({"rescale": 1}, "rescale=1"),
        ({"rescale": True, "reference": "t2t"}, "rescale=True"),
        ({"noise": "column", "reference": "for_ai"}, "noise='column'"),
    ],
)
def test_bad_semantics(kwargs, match):
    args = {"targeting": "unit", **kwargs}
    with pytest.raises((ValueError, TypeError), match=match):
        T.targeted_dropout(_kernel(), 0.5, 0.5, training=True, **args)


def test_the_default_unit_noise_is_whole_columns():
    kernel = _kernel()
    draws = _draw(kernel, None, False)
    targeted = _np_targeted_columns(kernel, 0.5)
    cols = draws.reshape(len(draws), -1, 8)
    zero = cols == 0
    assert np.all(zero.all(1) | (~zero).all(1))
    assert not zero[..., ~targeted].any()
    # Exactly floor(0.5 * 8) = 4 columns targeted; each dropped with
    # probability alpha (DRAWS draws per column, 5 standard errors).
    dropped = zero.all(1)[:, targeted].mean()
    assert abs(dropped - 0.5) < 5 * 0.5 / np.sqrt(DRAWS)
    # Expected effective kernel: dense minus alpha times the targeted part.
    expected = kernel.copy()
    expected[..., targeted] *= 0.5
    se = np.abs(kernel) * 0.5 / np.sqrt(DRAWS)
    assert np.all(np.abs(draws.mean(0) - expected) <= 5 * se + 1e-6)
    # Weight targeting keeps one draw per element.
    assert T.resolve_noise(None, "weight", None) == "element"
    assert T.resolve_noise(None, "unit", "t2t") == "element"
