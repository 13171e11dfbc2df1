"""Targeting functions against numpy transcriptions of the references.

The transcriptions below are written from docs/REFERENCE.md (Tensor2Tensor's
`common_layers.targeted_dropout` and for-ai/TD's `models/utils/dropouts.py`),
not from `keras_tdrop/targeting.py`.
"""

import math

import keras
import numpy as np
import pytest
from hypothesis import given
from hypothesis import settings
from hypothesis import strategies as st
from keras import ops

from keras_tdrop import targeting as T
from tests.tolerance import assert_close

SHAPES = [(5,), (10, 7), (1, 4), (3, 3, 4, 8), (2, 2, 2, 3, 4)]
if keras.backend.backend() == "jax":
    # JAX compiles every op anew for each shape and count; CI runs this
    # grid on three shapes there (ranks 1, 2 and 4) to stay in its budget.
    SHAPES = [(5,), (10, 7), (3, 3, 4, 8)]
RATES = [0.0, 0.3, 0.5, 0.75, 1.0]
TARGETINGS = ["weight", "unit"]
REFERENCES = [None, "t2t", "for_ai"]
KINDS = ["normal", "ties", "zeros"]


# --- numpy transcriptions of the references ---------------------------------


def np_count(gamma, n):
    """k = floor(gamma * n) in float32 with a relative guard of 2**-20."""
    product = np.float32(gamma) * np.float32(n) * np.float32(1 + 2**-20)
    return int(min(max(int(np.floor(product)), 0), n))


def np_lowest(scores, k, reference):
    """Targeted entries of each column of `scores` ([n, c]) given k."""
    n = scores.shape[0]
    if reference is None:
        rank = np.argsort(
            np.argsort(scores, axis=0, kind="stable"), axis=0, kind="stable"
        )
        return rank < k
    if k >= n:  # The reference's sorted index k is out of range.
        return np.ones(scores.shape, bool)
    thres = np.sort(scores, axis=0)[k]
    if reference == "t2t":
        return scores <= thres
    return scores < thres


def np_mask(w, gamma, targeting, reference, k=None):
    w = np.asarray(w, np.float64)
    m = w.reshape(-1, w.shape[-1])
    if targeting == "weight":
        scores = np.abs(m)
    else:
        # Squared L2 norms rank the columns as the norms do.
        scores = np.sum(m**2, axis=0)[:, None]
    n = scores.shape[0]
    k = np_count(gamma, n) if k is None else k
    mask = np_lowest(scores, k, reference)
    if targeting == "unit":
        mask = np.broadcast_to(mask[:, 0][None, :], m.shape)
    return mask.reshape(w.shape)


def np_inference(w, alpha, gamma, targeting, reference, prune=None):
    if prune is None:
        prune = reference is not None
    if not prune:
        return w
    k = None
    if reference == "t2t":
        rows, cols = int(np.prod(w.shape[:-1])), w.shape[-1]
        n = rows if targeting == "weight" else cols
        k = int(np.round(np.float32(np_count(gamma, n)) * np.float32(alpha)))
    mask = np_mask(w, gamma, targeting, reference, k)
    return w * (1 - mask)


def make_kernel(shape, kind, seed=0):
    rng = np.random.RandomState(seed)
    if kind == "normal":
        return rng.randn(*shape).astype("float32")
    if kind == "ties":
        return rng.randint(-3, 4, size=shape).astype("float32")
    return np.zeros(shape, "float32")


def to_np(x):
    return ops.convert_to_numpy(x)


def matrix(x):
    x = np.asarray(x)
    return x.reshape(-1, x.shape[-1])


# --- counts ------------------------------------------------------------------


@pytest.mark.parametrize(
    "gamma, n, expected",
    [
        (0.29, 100, 29),  # 28.999999... in float64; the guard gives 29.
        (0.5, 7, 3),
        (0.3, 10, 3),
        (0.7, 10, 7),
        (0.75, 36, 27),
        (0.999, 10, 9),
        (1.0, 1, 1),
        (1.0, 7, 7),
        (1.0, 4096, 4096),
        (0.0, 7, 0),
        (0.0, 1, 0),
        (0.5, 1, 0),
        (1.5, 10, 10),
        (-0.5, 10, 0),
    ],
)
def test_target_count(gamma, n, expected):
    assert int(to_np(T.target_count(gamma, n))) == expected
    assert np_count(gamma, n) == expected


def test_target_count_accepts_tensors_and_variables():
    assert int(to_np(T.target_count(ops.convert_to_tensor(0.29), 100))) == 29
    gamma = keras.Variable(0.5, trainable=False, dtype="float32")
    assert int(to_np(T.target_count(gamma, 7))) == 3
    gamma.assign(0.75)
    assert int(to_np(T.target_count(gamma, 36))) == 27


@pytest.mark.parametrize("n", [1, 2, 3, 7, 10, 36, 100, 1000])
def test_target_count_matches_transcription(n):
    for gamma in np.linspace(0.0, 1.0, 101):
        assert int(to_np(T.target_count(float(gamma), n))) == np_count(gamma, n)


@pytest.mark.parametrize(
    "gamma, alpha, n, expected",
    [
        (0.5, 0.5, 10, 2),  # k=5, 2.5 -> 2 (half to even)
        (0.7, 0.5, 10, 4),  # k=7, 3.5 -> 4
        (0.3, 0.5, 10, 2),  # k=3, 1.5 -> 2
        (0.1, 0.5, 10, 0),  # k=1, 0.5 -> 0
        (0.75, 0.66, 36, 18),  # k=27, 17.82 -> 18
        (0.9, 0.75, 10, 7),  # k=9, 6.75 -> 7
        (1.0, 1.0, 8, 8),
        (0.5, 0.0, 10, 0),
        (0.0, 0.5, 10, 0),
    ],
)
def test_inference_count(gamma, alpha, n, expected):
    assert int(to_np(T.inference_count(gamma, alpha, n))) == expected


@pytest.mark.parametrize(
    "shape, expected",
    [
        ((5,), (1, 5)),
        ((10, 7), (10, 7)),
        ((1, 4), (1, 4)),
        ((3, 3, 4, 8), (36, 8)),
        ((2, 2, 2, 3, 4), (24, 4)),
    ],
)
def test_matrix_shape(shape, expected):
    assert T.matrix_shape(shape) == expected


@pytest.mark.parametrize("shape", [(), (None, 4), (3, None)])
def test_matrix_shape_rejects_unknown_or_scalar(shape):
    with pytest.raises(ValueError, match="non-scalar"):
        T.matrix_shape(shape)


# --- masks -------------------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("reference", REFERENCES)
@pytest.mark.parametrize("targeting", TARGETINGS)
@pytest.mark.parametrize("gamma", RATES)
@pytest.mark.parametrize("shape", SHAPES)
def test_mask_equals_reference(shape, gamma, targeting, reference, kind):
    w = make_kernel(shape, kind)
    mask = to_np(T.targeted_mask(w, gamma, targeting, reference))
    assert mask.dtype == bool
    assert mask.shape == shape
    np.testing.assert_array_equal(mask, np_mask(w, gamma, targeting, reference))


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("gamma", RATES)
@pytest.mark.parametrize("shape", SHAPES)
def test_default_weight_mask_counts(shape, gamma, kind):
    w = make_kernel(shape, kind, seed=1)
    rows, cols = T.matrix_shape(shape)
    k = np_count(gamma, rows)
    mask = matrix(to_np(T.targeted_mask(w, gamma, "weight")))
    np.testing.assert_array_equal(mask.sum(axis=0), np.full(cols, k))
    # Every targeted entry is no larger than every untargeted one.
    a = np.abs(matrix(w))
    for c in range(cols):
        if 0 < k < rows:
            assert a[mask[:, c], c].max() <= a[~mask[:, c], c].min()
    if kind == "zeros":  # All tied: the lowest indices go first.
        assert mask[:k].all() and not mask[k:].any()


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("gamma", RATES)
@pytest.mark.parametrize("shape", SHAPES)
def test_default_unit_mask_counts(shape, gamma, kind):
    w = make_kernel(shape, kind, seed=2)
    rows, cols = T.matrix_shape(shape)
    k = np_count(gamma, cols)
    mask = matrix(to_np(T.targeted_mask(w, gamma, "unit")))
    # Whole columns, exactly k of them.
    assert (mask.all(axis=0) | ~mask.any(axis=0)).all()
    assert mask[0].sum() == k
    norms = np.linalg.norm(matrix(w).astype(np.float64), axis=0)
    if 0 < k < cols:
        assert norms[mask[0]].max() <= norms[~mask[0]].min()
    if kind == "zeros":
        np.testing.assert_array_equal(mask[0], np.arange(cols) < k)


def test_tie_rules_on_a_known_column():
    # |w| sorted: 0 1 1 1 2 3; k = floor(0.5 * 6) = 3, sorted[3] = 1.
    w = np.array([[1.0], [-1.0], [3.0], [0.0], [1.0], [2.0]], "float32")
    t2t = to_np(T.targeted_mask(w, 0.5, reference="t2t"))[:, 0]
    for_ai = to_np(T.targeted_mask(w, 0.5, reference="for_ai"))[:, 0]
    default = to_np(T.targeted_mask(w, 0.5))[:, 0]
    np.testing.assert_array_equal(t2t, [1, 1, 0, 1, 1, 0])  # 4 > k+1 on ties
    np.testing.assert_array_equal(for_ai, [0, 0, 0, 1, 0, 0])  # < k on ties
    np.testing.assert_array_equal(default, [1, 1, 0, 1, 0, 0])  # exactly k


def test_reference_counts_without_ties():
    w = make_kernel((20, 6), "normal", seed=3)
    for gamma in [0.0, 0.25, 0.5, 0.95]:
        k = np_count(gamma, 20)
        t2t = to_np(T.targeted_mask(w, gamma, reference="t2t"))
        for_ai = to_np(T.targeted_mask(w, gamma, reference="for_ai"))
        np.testing.assert_array_equal(t2t.sum(axis=0), np.full(6, k + 1))
        np.testing.assert_array_equal(for_ai.sum(axis=0), np.full(6, k))
    for reference in ["t2t", "for_ai"]:
        assert to_np(T.targeted_mask(w, 1.0, reference=reference)).all()


@pytest.mark.parametrize("reference", REFERENCES)
@pytest.mark.parametrize("targeting", TARGETINGS)
def test_count_overrides_target_rate(targeting, reference):
    w = make_kernel((6, 5), "ties", seed=4)
    for k in range(6 if targeting == "unit" else 7):
        mask = to_np(T.targeted_mask(w, 0.9, targeting, reference, count=k))
        np.testing.assert_array_equal(
            mask, np_mask(w, 0.9, targeting, reference, k=k)
        )


def test_mask_with_variable_target_rate_in_tf_function():
    tf = pytest.importorskip("tensorflow")
    if keras.backend.backend() != "tensorflow":
        pytest.skip("tf.function needs the tensorflow backend")
    w = make_kernel((12, 5), "ties", seed=5)
    gamma = keras.Variable(0.0, trainable=False, dtype="float32")

    @tf.function
    def fn(kernel):
        return T.targeted_mask(kernel, gamma, "weight", "t2t")

    for value in [0.0, 0.5, 1.0]:
        gamma.assign(value)
        np.testing.assert_array_equal(
            to_np(fn(w)), np_mask(w, value, "weight", "t2t")
        )


def test_mask_under_xla_on_tensorflow():
    """TensorFlow's `jit_compile=True` (what `model.compile(jit_compile=
    True)` traces) takes the bit-by-bit selection that JAX uses: XLA cannot
    compile `top_k` with a tensor `k`, so this compiles only on that path.
    One compiled function serves every case (the shape stays the same)."""
    tf = pytest.importorskip("tensorflow")
    if keras.backend.backend() != "tensorflow":
        pytest.skip("tf.function needs the tensorflow backend")
    gamma = keras.Variable(0.0, trainable=False, dtype="float32")
    cases = [(t, r) for t in TARGETINGS for r in REFERENCES]

    @tf.function(jit_compile=True)
    def fn(kernel):
        return [T.targeted_mask(kernel, gamma, t, r) for t, r in cases]

    for kind in KINDS:
        w = make_kernel((3, 3, 4, 8), kind, seed=6)
        for value in [0.0, 0.3, 0.75, 1.0]:
            gamma.assign(value)
            for (targeting, reference), mask in zip(cases, fn(w)):
                np.testing.assert_array_equal(
                    to_np(mask), np_mask(w, value, targeting, reference)
                )


@settings(max_examples=60, deadline=None, derandomize=True, database=None)
@given(
    shape=st.lists(st.integers(1, 5), min_size=1, max_size=4).map(tuple),
    gamma=st.floats(0.0, 1.0),
    targeting=st.sampled_from(TARGETINGS),
    reference=st.sampled_from(REFERENCES),
    seed=st.integers(0, 2**16),
)
def test_mask_property(shape, gamma, targeting, reference, seed):
    w = np.random.RandomState(seed).randint(-2, 3, size=shape)
    w = w.astype("float32")
    mask = to_np(T.targeted_mask(w, gamma, targeting, reference))
    np.testing.assert_array_equal(mask, np_mask(w, gamma, targeting, reference))


# --- errors ------------------------------------------------------------------


def test_unknown_targeting_raises():
    w = np.ones((3, 2), "float32")
    with pytest.raises(ValueError, match="'bogus'"):
        T.targeted_mask(w, 0.5, targeting="bogus")
    with pytest.raises(ValueError, match="'bogus'"):
        T.targeted_dropout(w, 0.5, 0.5, targeting="bogus", training=True)
    with pytest.raises(ValueError, match="'bogus'"):
        T.targeted_dropout(
            w, 0.5, 0.5, targeting="bogus", reference="t2t", training=False
        )


def test_unknown_reference_raises():
    w = np.ones((3, 2), "float32")
    with pytest.raises(ValueError, match="'tf2'"):
        T.targeted_mask(w, 0.5, reference="tf2")
    with pytest.raises(ValueError, match="'tf2'"):
        T.targeted_dropout(w, 0.5, 0.5, reference="tf2", training=True)
    with pytest.raises(ValueError, match="'tf2'"):
        T.targeted_dropout(w, 0.5, 0.5, reference="tf2", training=False)


def test_scalar_kernel_raises():
    w = np.float32(1.0)
    with pytest.raises(ValueError, match="non-scalar"):
        T.targeted_mask(w, 0.5)
    with pytest.raises(ValueError, match="non-scalar"):
        T.targeted_dropout(w, 0.5, 0.5, training=True)
    with pytest.raises(ValueError, match="non-scalar"):
        T.targeted_dropout(w, 0.5, 0.5, reference="for_ai", training=False)


def test_bad_arguments_raise_at_default_inference():
    w = np.ones((3, 2), "float32")
    with pytest.raises(ValueError, match="'bogus'"):
        T.targeted_dropout(w, 0.5, 0.5, targeting="bogus", training=False)


# --- inference ---------------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("reference", REFERENCES)
@pytest.mark.parametrize("targeting", TARGETINGS)
@pytest.mark.parametrize(
    "gamma, alpha",
    [(0.0, 0.5), (0.5, 0.5), (0.75, 0.66), (0.9, 0.3), (1.0, 1.0), (0.3, 0.0)],
)
@pytest.mark.parametrize("shape", SHAPES)
def test_inference_equals_reference(
    shape, gamma, alpha, targeting, reference, kind
):
    w = make_kernel(shape, kind, seed=6)
    out = to_np(T.targeted_dropout(w, alpha, gamma, targeting, reference))
    np.testing.assert_array_equal(
        out, np_inference(w, alpha, gamma, targeting, reference)
    )
    # Pruning on demand / off on demand.
    for prune in [True, False]:
        out = to_np(
            T.targeted_dropout(
                w,
                alpha,
                gamma,
                targeting,
                reference,
                prune_at_inference=prune,
            )
        )
        np.testing.assert_array_equal(
            out, np_inference(w, alpha, gamma, targeting, reference, prune)
        )


def test_inference_known_values():
    # One column, |w| = 0..9 shuffled; gamma 0.5 -> k = 5.
    w = np.array([3, -7, 0, 5, -1, 9, 2, -8, 4, 6], "float32")[:, None]

    def zeroed(**kwargs):
        out = to_np(T.targeted_dropout(w, 0.5, 0.5, **kwargs))
        return set(np.flatnonzero(out[:, 0] == 0))

    # t2t: k' = round(5 * 0.5) = 2 (half to even), `<=` prunes k'+1 = 3:
    # |w| in {0, 1, 2}.
    assert zeroed(reference="t2t") == {2, 4, 6}
    # for_ai: the k = 5 targeted, |w| in {0, ..., 4}.
    assert zeroed(reference="for_ai") == {2, 4, 6, 0, 8}
    # default: unchanged unless asked, then the exact k.
    assert zeroed() == {2}
    assert zeroed(prune_at_inference=True) == {2, 4, 6, 0, 8}
    assert zeroed(reference="t2t", prune_at_inference=False) == {2}


# --- training ----------------------------------------------------------------


@pytest.mark.parametrize("kind", ["normal", "ties"])
@pytest.mark.parametrize("reference", REFERENCES)
@pytest.mark.parametrize("targeting", TARGETINGS)
@pytest.mark.parametrize("alpha", RATES)
@pytest.mark.parametrize("shape", SHAPES)
def test_training_invariants(shape, alpha, targeting, reference, kind):
    w = make_kernel(shape, kind, seed=7)
    gamma = 0.5
    mask = np_mask(w, gamma, targeting, reference)
    for seed in range(3):
        out = to_np(
            T.targeted_dropout(
                w,
                alpha,
                gamma,
                targeting,
                reference,
                training=True,
                seed=seed,
            )
        )
        assert out.shape == w.shape and out.dtype == w.dtype
        np.testing.assert_array_equal(out[~mask], w[~mask])
        dropped = mask & (out == 0)
        kept = mask & ~dropped
        if reference == "t2t" and alpha < 1:
            scale = np.float32(1) / (np.float32(1) - np.float32(alpha))
            assert_close(out[kept], w[kept] * scale, rtol=1e-6)
        else:
            np.testing.assert_array_equal(out[kept], w[kept])
        if alpha == 0.0:
            assert not (dropped & (w != 0)).any()
        if alpha == 1.0:
            assert (out[mask] == 0).all()


@pytest.mark.parametrize("reference", REFERENCES)
@pytest.mark.parametrize("targeting", TARGETINGS)
@pytest.mark.parametrize("alpha", [0.25, 0.5, 0.9])
def test_drop_fraction_statistics(alpha, targeting, reference):
    w = make_kernel((32, 32), "normal", seed=8)  # no zeros
    gamma = 0.5
    mask = np_mask(w, gamma, targeting, reference)
    steps = 50
    gen = keras.random.SeedGenerator(11)
    drops = np.zeros(w.shape)
    for _ in range(steps):
        out = to_np(
            T.targeted_dropout(
                w,
                alpha,
                gamma,
                targeting,
                reference,
                training=True,
                seed=gen,
                noise="element",
            )
        )
        np.testing.assert_array_equal(out[~mask], w[~mask])
        drops += out == 0
    assert not drops[~mask].any()
    trials = steps * mask.sum()
    fraction = drops[mask].sum() / trials
    tolerance = 4 * math.sqrt(alpha * (1 - alpha) / trials)
    assert abs(fraction - alpha) < tolerance
    # Each targeted element draws its own noise: its drop count over the
    # steps is Binomial(steps, alpha), not 0 or `steps` as with shared noise.
    per_element = drops[mask]
    if alpha == 0.5:
        assert per_element.min() > 0 and per_element.max() < steps
    assert abs(per_element.std() - math.sqrt(steps * alpha * (1 - alpha))) < (
        0.25 * math.sqrt(steps * alpha * (1 - alpha))
    )


@pytest.mark.parametrize("reference", REFERENCES)
def test_unit_mode_drops_single_elements(reference):
    w = make_kernel((32, 8), "normal", seed=9)
    out = to_np(
        T.targeted_dropout(
            w,
            0.5,
            0.5,
            "unit",
            reference,
            training=True,
            seed=3,
            noise="element",
        )
    )
    mask = np_mask(w, 0.5, "unit", reference)
    targeted_cols = np.flatnonzero(mask[0])
    assert len(targeted_cols) >= 4
    for c in targeted_cols:
        zeros = (out[:, c] == 0).sum()
        assert 0 < zeros < 32  # partly dropped, not whole columns


@pytest.mark.parametrize("alpha", [0.25, 0.5, 0.9])
def test_default_unit_noise_drops_whole_columns_at_rate_alpha(alpha):
    # The default unit semantics (noise=None -> "column"): one draw per
    # targeted column, so each targeted column's drop count over the steps
    # is Binomial(steps, alpha) and every element of it shares it.
    w = make_kernel((32, 64), "normal", seed=8)
    mask = np_mask(w, 0.5, "unit", None)
    targeted = mask[0]
    assert targeted.sum() == 32
    steps = 100
    gen = keras.random.SeedGenerator(12)
    drops = np.zeros(w.shape)
    for _ in range(steps):
        out = to_np(
            T.targeted_dropout(w, alpha, 0.5, "unit", training=True, seed=gen)
        )
        zero = out == 0
        assert np.all(zero.all(0) | ~zero.any(0))
        np.testing.assert_array_equal(out[~mask], w[~mask])
        drops += zero
    per_column = drops[0, targeted]
    trials = steps * targeted.sum()
    tolerance = 4 * math.sqrt(alpha * (1 - alpha) / trials)
    assert abs(per_column.sum() / trials - alpha) < tolerance
    assert abs(per_column.std() - math.sqrt(steps * alpha * (1 - alpha))) < (
        0.45 * math.sqrt(steps * alpha * (1 - alpha))
    )


def test_noise_fresh_with_generator_reproducible_with_int_seed():
    w = make_kernel((16, 16), "normal", seed=10)

    def call(seed):
        return to_np(T.targeted_dropout(w, 0.5, 0.75, training=True, seed=seed))

    np.testing.assert_array_equal(call(123), call(123))
    assert not np.array_equal(call(123), call(124))
    gen = keras.random.SeedGenerator(5)
    first, second = call(gen), call(gen)
    assert not np.array_equal(first, second)
    replay = keras.random.SeedGenerator(5)
    np.testing.assert_array_equal(call(replay), first)
    np.testing.assert_array_equal(call(replay), second)


def test_all_zero_kernel_stays_zero():
    w = np.zeros((6, 4), "float32")
    for reference in REFERENCES:
        for targeting in TARGETINGS:
            for training in [True, False]:
                out = to_np(
                    T.targeted_dropout(
                        w,
                        0.5,
                        0.5,
                        targeting,
                        reference,
                        training=training,
                        prune_at_inference=True,
                        seed=1,
                    )
                )
                assert not out.any() and not np.isnan(out).any()


# --- dtypes ------------------------------------------------------------------


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
@pytest.mark.parametrize("reference", REFERENCES)
@pytest.mark.parametrize("targeting", TARGETINGS)
@pytest.mark.parametrize("alpha", [0.0, 0.5, 0.99])
def test_low_precision_kernels(dtype, reference, targeting, alpha):
    w32 = make_kernel((8, 6), "normal", seed=12)
    w = ops.cast(w32, dtype)
    exact = to_np(ops.cast(w, "float32"))
    mask = to_np(T.targeted_mask(w, 0.5, targeting, reference))
    np.testing.assert_array_equal(
        mask, np_mask(exact, 0.5, targeting, reference)
    )
    for training in [True, False]:
        out = T.targeted_dropout(
            w,
            alpha,
            0.5,
            targeting,
            reference,
            training=training,
            prune_at_inference=True,
            seed=1,
        )
        assert keras.backend.standardize_dtype(out.dtype) == dtype
        out = to_np(ops.cast(out, "float32"))
        assert np.isfinite(out).all()
        np.testing.assert_array_equal(out[~mask], exact[~mask])


@pytest.mark.parametrize("targeting", TARGETINGS)
def test_float16_t2t_rate_one_has_no_nan(targeting):
    w = ops.cast(make_kernel((8, 6), "normal", seed=13), "float16")
    out = T.targeted_dropout(
        w, 1.0, 0.5, targeting, "t2t", training=True, seed=1
    )
    assert keras.backend.standardize_dtype(out.dtype) == "float16"
    assert np.isfinite(to_np(ops.cast(out, "float32"))).all()
