"""Properties of targeting, pruning and triangular masks (hypothesis).

Backend-agnostic: run under every Keras backend.
"""

import keras
import numpy as np
from hypothesis import given
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from keras import ops

from keras_tdrop import TriangularDropout
from keras_tdrop import targeting
from keras_tdrop.layers.triangular_dropout import triangular_widths
from keras_tdrop.pruning import apply_masks
from keras_tdrop.pruning import compute_masks
from keras_tdrop.pruning.shrink import shrink
from tests.tolerance import assert_close

FAST = settings(max_examples=25, deadline=None)
GUARD = np.float32(1.0 + 2.0**-20)


def expected_count(rate, n):
    """floor(rate * n) as the module documents it: float32, 2**-20 guard."""
    k = np.floor(np.float32(rate) * np.float32(n) * GUARD)
    return int(min(max(k, 0), n))


def mask(kernel, rate, mode="weight"):
    return ops.convert_to_numpy(targeting.targeted_mask(kernel, rate, mode))


# Small integers give ties; the default semantics must still be exact.
tied_kernels = hnp.arrays(
    np.float32,
    hnp.array_shapes(min_dims=2, max_dims=2, min_side=1, max_side=9),
    elements=st.integers(-3, 3).map(float),
)
rates = st.floats(0.0, 1.0, width=32)


@FAST
@given(tied_kernels, rates)
def test_exact_count_per_column(kernel, rate):
    targeted = mask(kernel, rate)
    counts = targeted.sum(axis=0)
    assert counts.tolist() == [expected_count(rate, kernel.shape[0])] * len(
        counts
    )
    # ... and they are the lowest |w| of the column.
    absolute = np.abs(kernel)
    for col in range(kernel.shape[1]):
        hit, miss = (
            absolute[targeted[:, col], col],
            absolute[~targeted[:, col], col],
        )
        if hit.size and miss.size:
            assert hit.max() <= miss.min()


@FAST
@given(tied_kernels, rates, rates, st.sampled_from(["weight", "unit"]))
def test_monotone_in_the_rate(kernel, a, b, mode):
    low, high = sorted((a, b))
    # Ties are broken by index, so the sets nest even among ties.
    assert np.all(mask(kernel, low, mode) <= mask(kernel, high, mode))


distinct_kernels = st.integers(1, 8).flatmap(
    lambda rows: st.integers(1, 6).flatmap(
        lambda cols: hnp.arrays(
            np.float32,
            (rows, cols),
            elements=st.integers(-1000, 1000).map(float),
            unique=True,
        )
    )
)


@FAST
@given(distinct_kernels, rates, st.sampled_from(["weight", "unit"]), st.data())
def test_invariant_to_permuting_columns(kernel, rate, mode, data):
    perm = np.array(data.draw(st.permutations(range(kernel.shape[1]))))
    if mode == "unit":
        # Column norms must be distinct for the order not to matter.
        norms = np.linalg.norm(kernel, axis=0)
        if len(set(norms.tolist())) < len(norms):
            return
    assert np.array_equal(
        mask(kernel[:, perm], rate, mode), mask(kernel, rate, mode)[:, perm]
    )


@FAST
@given(tied_kernels, rates)
def test_unit_targeting_is_weight_targeting_of_the_column_norms(kernel, rate):
    norms = ops.sqrt(ops.sum(ops.square(kernel), axis=0))
    by_weight = mask(ops.reshape(norms, (-1, 1)), rate)[:, 0]
    by_unit = mask(kernel, rate, "unit")
    assert np.array_equal(by_unit, np.broadcast_to(by_weight, kernel.shape))


def mlp(widths, seed):
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((widths[0],))
    x = inputs
    for i, width in enumerate(widths[1:-1]):
        x = keras.layers.Dense(width, activation="relu", name=f"fc{i}")(x)
    outputs = keras.layers.Dense(widths[-1], name="logits")(x)
    return keras.Model(inputs, outputs)


def convnet(filters, seed):
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((6, 6, 2))
    x = keras.layers.Conv2D(filters[0], 3, activation="relu", name="c0")(inputs)
    x = keras.layers.BatchNormalization(name="bn")(x)
    x = keras.layers.Conv2D(filters[1], 3, activation="relu", name="c1")(x)
    x = keras.layers.Flatten()(x)
    x = keras.layers.Dense(filters[2], activation="relu", name="fc")(x)
    return keras.Model(inputs, keras.layers.Dense(3, name="logits")(x))


architectures = st.one_of(
    st.lists(st.integers(1, 7), min_size=3, max_size=5).map(
        lambda w: ("mlp", w)
    ),
    st.lists(st.integers(1, 5), min_size=3, max_size=3).map(
        lambda f: ("conv", f)
    ),
)


def build(arch, seed):
    kind, widths = arch
    model = mlp(widths, seed) if kind == "mlp" else convnet(widths, seed)
    if kind == "conv":
        bn = model.get_layer("bn")
        rng = np.random.default_rng(seed)
        bn.set_weights([rng.uniform(0.5, 2, w.shape) for w in bn.get_weights()])
    return model


def sample(model, seed):
    shape = (3,) + tuple(model.input.shape[1:])
    return np.random.default_rng(seed).normal(size=shape).astype("float32")


@settings(max_examples=10, deadline=None)
@given(
    architectures,
    rates,
    st.sampled_from(["weight", "unit"]),
    st.integers(0, 99),
)
def test_masks_are_idempotent(arch, rate, mode, seed):
    model = build(arch, seed)
    masks = compute_masks(model, rate, targeting=mode)
    once = apply_masks(model, masks, inplace=True)
    again = compute_masks(once, rate, targeting=mode)
    assert masks.keys() == again.keys()
    for path in masks:
        assert np.array_equal(masks[path], again[path]), path
    before = [np.array(w) for w in once.get_weights()]
    apply_masks(once, again, inplace=True)
    for a, b in zip(before, once.get_weights()):
        assert np.array_equal(a, b)


@settings(max_examples=10, deadline=None)
@given(
    architectures,
    rates,
    st.sampled_from(["weight", "unit"]),
    st.integers(0, 99),
)
def test_shrink_of_masked_model_equals_masked_model(arch, rate, mode, seed):
    model = build(arch, seed)
    masks = compute_masks(model, rate, targeting=mode)
    masked = apply_masks(model, masks, inplace=True)
    small, _ = shrink(masked)
    x = sample(model, seed)
    expected = ops.convert_to_numpy(masked(x, training=False))
    actual = ops.convert_to_numpy(small(x, training=False))
    assert_close(actual, expected, rtol=1e-5, atol=1e-5)
    zero_units = sum(
        int(np.sum(~np.any(m.reshape(-1, m.shape[-1]), axis=0)))
        for m in masks.values()
    )
    assert small.count_params() <= masked.count_params()
    if zero_units:
        assert small.count_params() < masked.count_params()


@FAST
@given(st.integers(1, 40), st.integers(1, 12))
def test_triangular_rows_are_prefixes_with_the_documented_widths(batch, units):
    layer = TriangularDropout(seed=0)
    out = ops.convert_to_numpy(
        layer(np.ones((batch, units), "float32"), training=True)
    )
    widths = out.sum(axis=1).astype(int)
    prefix = np.arange(units)[None, :] < widths[:, None]
    assert np.array_equal(out, prefix.astype("float32"))
    j = np.arange(batch)
    assert widths.tolist() == (-(-(j + 1) * units // batch)).tolist()
    assert (
        widths.tolist()
        == ops.convert_to_numpy(triangular_widths(batch, units)).tolist()
    )


def test_random_mode_rows_are_prefixes_with_uniform_widths():
    units, rows = 5, 4000
    layer = TriangularDropout(mode="random", seed=3)
    out = ops.convert_to_numpy(
        layer(np.ones((rows, units), "float32"), training=True)
    )
    widths = out.sum(axis=1).astype(int)
    assert np.array_equal(
        out, (np.arange(units)[None, :] < widths[:, None]).astype("float32")
    )
    counts = np.bincount(widths, minlength=units + 1)
    assert counts[0] == 0
    expected = rows / units
    sigma = np.sqrt(rows * (1 / units) * (1 - 1 / units))
    assert np.all(np.abs(counts[1:] - expected) < 5 * sigma), counts
