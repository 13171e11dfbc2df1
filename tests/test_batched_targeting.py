"""Batched targeted dropout: the same targeted sets as one kernel at a time,
fresh noise per kernel, one selection per kernel size."""

import math

import keras
import numpy as np
import pytest
from keras import ops

from keras_tdrop import batched_targeting as B
from keras_tdrop import targeting as T
from tests.tolerance import assert_close

# Column lengths 27, 27, 8, 27, 8 (weight); widths 4, 8, 4, 6, 8 (unit).
SHAPES = [(3, 3, 3, 4), (27, 8), (2, 4, 4), (3, 9, 6), (1, 1, 8, 8)]


def kernels(seed=0, dtype="float32"):
    rng = np.random.default_rng(seed)
    # Distinct magnitudes and norms everywhere: the targeted sets are
    # unambiguous, as in the numpy transcription below.
    return [
        (rng.permutation(math.prod(s)).reshape(s) + 1.0).astype(dtype)
        * rng.choice([-1.0, 1.0], size=s).astype(dtype)
        for s in SHAPES
    ]


def np_targeted(kernel, gamma, targeting):
    """Numpy: the targeted elements of one kernel (reference semantics)."""
    matrix = kernel.reshape(-1, kernel.shape[-1])
    if targeting == "weight":
        k = math.floor(gamma * matrix.shape[0])
        ranks = np.argsort(np.argsort(np.abs(matrix), axis=0), axis=0)
        return (ranks < k).reshape(kernel.shape)
    k = math.floor(gamma * matrix.shape[1])
    ranks = np.argsort(np.argsort(np.linalg.norm(matrix, axis=0)))
    return np.broadcast_to(ranks < k, matrix.shape).reshape(kernel.shape)


def test_batches_group_by_what_the_selection_shares():
    ks = kernels()
    assert B.batches(ks, "weight") == [[0, 1, 3], [2, 4]]
    assert B.batches(ks, "unit") == [[0, 2], [1, 4], [3]]
    mixed = ks[:2] + [ks[1].astype("float16")]
    assert B.batches(mixed, "weight") == [[0, 1], [2]]
    with pytest.raises(ValueError, match="targeting"):
        B.batches(ks, "units")


@pytest.mark.parametrize("targeting", ["weight", "unit"])
@pytest.mark.parametrize("reference", [None, "t2t", "for_ai"])
@pytest.mark.parametrize("gamma", [0.0, 0.3, 0.5, 1.0])
def test_rate_one_drops_exactly_each_kernels_targeted_set(
    targeting, reference, gamma
):
    ks = kernels()
    dropped = B.targeted_dropout_many(
        ks, 1.0, gamma, targeting, reference, seed=1
    )
    assert len(dropped) == len(ks)
    for kernel, value in zip(ks, dropped):
        targeted = np.asarray(
            T.targeted_mask(kernel, gamma, targeting, reference)
        )
        if reference is None:
            np.testing.assert_array_equal(
                targeted, np_targeted(kernel, gamma, targeting)
            )
        value = ops.convert_to_numpy(value)
        assert value.shape == kernel.shape
        np.testing.assert_array_equal(value, np.where(targeted, 0.0, kernel))


@pytest.mark.parametrize(
    "targeting, noise", [("weight", "element"), ("unit", "column")]
)
def test_dropped_fraction_is_rate_with_fresh_noise_per_kernel(targeting, noise):
    # Identical kernels in one batch: only the noise tells them apart.
    same = kernels()[1]
    ks = [same, same, same]
    rate, gamma, draws = 0.3, 0.5, 40
    targeted = np_targeted(same, gamma, targeting)
    seed = keras.random.SeedGenerator(5)
    dropped_counts = np.zeros((3,) + same.shape)
    differ = 0
    for _ in range(draws):
        values = B.targeted_dropout_many(
            ks, rate, gamma, targeting, seed=seed, noise=noise
        )
        zeros = np.stack([ops.convert_to_numpy(v) == 0 for v in values])
        assert not np.any(zeros & ~targeted)
        if noise == "column":
            # Whole units: every element of a column dropped together.
            assert np.all(zeros == zeros[:, :1])
        differ += sum(not np.array_equal(zeros[0], z) for z in zeros[1:])
        dropped_counts += zeros
    if noise == "column":
        # 4 targeted units: two draws coincide with probability
        # (0.3**2 + 0.7**2)**4 = 0.11, so about 71 of 80 pairs differ.
        assert differ >= 60
    else:
        # 104 targeted weights: a coincidence has probability < 1e-20.
        assert differ == 2 * draws
    if noise == "column":
        trials = draws * 3 * int(targeted[0].sum())
        fraction = dropped_counts[:, 0, targeted[0]].sum() / trials
        assert trials == 480  # 40 draws x 3 kernels x 4 units
    else:
        trials = draws * 3 * int(targeted.sum())
        fraction = dropped_counts[:, targeted].sum() / trials
        assert trials == 12480  # 40 draws x 3 kernels x 13 rows x 8 columns
    # Binomial(trials, rate): within 5 standard deviations.
    assert abs(fraction - rate) < 5 * math.sqrt(rate * (1 - rate) / trials)


def test_rescaled_survivors_and_untouched_rest():
    ks = kernels()
    values = B.targeted_dropout_many(
        ks, 0.5, 0.5, "weight", seed=2, rescale=True
    )
    for kernel, value in zip(ks, values):
        value = ops.convert_to_numpy(value)
        targeted = np_targeted(kernel, 0.5, "weight")
        np.testing.assert_array_equal(value[~targeted], kernel[~targeted])
        kept = targeted & (value != 0)
        assert_close(value[kept], 2.0 * kernel[kept])
        assert 0 < kept.sum() < targeted.sum()


def test_one_selection_per_kernel_size():
    if keras.backend.backend() != "tensorflow":
        pytest.skip("counts TensorFlow graph ops")
    import tensorflow as tf

    ks = [tf.constant(k) for k in kernels()]
    seed = keras.random.SeedGenerator(0)

    def count(targeting):
        fn = tf.function(
            lambda: B.targeted_dropout_many(ks, 0.5, 0.5, targeting, seed=seed)
        )
        graph = fn.get_concrete_function().graph
        return sum(op.type == "NthElement" for op in graph.get_operations())

    assert count("weight") == 2
    assert count("unit") == 3


def test_bad_arguments():
    ks = kernels()
    with pytest.raises(ValueError, match="noise='column'"):
        B.targeted_dropout_many(ks, 0.5, 0.5, "weight", noise="column")
    with pytest.raises(ValueError, match="reference"):
        B.targeted_dropout_many(ks, 0.5, 0.5, "weight", reference="tf")
