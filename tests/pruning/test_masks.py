import keras
import numpy as np
import pytest
from keras import ops

from keras_tdrop import apply_targeted_dropout
from keras_tdrop.pruning import apply_masks
from keras_tdrop.pruning import compute_masks
from keras_tdrop.pruning import nm_masks
from keras_tdrop.pruning import prune


def model_with_ties():
    inputs = keras.Input((6, 6, 2))
    x = keras.layers.Conv2D(5, 3, name="conv")(inputs)
    x = keras.layers.Flatten()(x)
    x = keras.layers.Dense(12, name="fc")(x)
    outputs = keras.layers.Dense(3, name="logits")(x)
    model = keras.Model(inputs, outputs)
    rng = np.random.default_rng(0)
    for v in model.weights:
        v.assign(rng.integers(-3, 4, size=v.shape).astype("float32"))
    return model


def for_ai_prune(kernel, p, strategy):
    """for-ai/TD scripts/prune, transcribed: idx = int(p * n) lowest."""
    w = kernel.reshape(-1, kernel.shape[-1])
    if strategy == "weight":
        idx = int(p * w.shape[0])
        order = np.argsort(np.abs(w), axis=0, kind="stable")
        keep = np.ones_like(w)
        np.put_along_axis(keep, order[:idx], 0.0, axis=0)
    else:
        idx = int(p * w.shape[1])
        order = np.argsort(np.linalg.norm(w, axis=0), kind="stable")
        keep = np.ones_like(w)
        keep[:, order[:idx]] = 0.0
    return keep.reshape(kernel.shape)


@pytest.mark.parametrize("targeting", ["weight", "unit"])
@pytest.mark.parametrize("fraction", [0.0, 0.1, 0.25, 0.5, 0.8, 0.9, 1.0])
def test_masks_match_reference_counts(targeting, fraction):
    model = model_with_ties()
    masks = compute_masks(model, fraction, targeting)
    assert set(masks) == {"conv/kernel", "fc/kernel"}
    for path, mask in masks.items():
        kernel = ops.convert_to_numpy(
            model.get_layer(path.split("/")[0]).kernel
        )
        assert mask.shape == kernel.shape and mask.dtype == np.float32
        np.testing.assert_array_equal(
            mask, for_ai_prune(kernel, fraction, targeting)
        )
        matrix = mask.reshape(-1, kernel.shape[-1])
        rows, cols = matrix.shape
        if targeting == "weight":
            np.testing.assert_array_equal(
                (matrix == 0).sum(axis=0), int(fraction * rows + 1e-9)
            )
        else:
            assert (matrix == 0).all(axis=0).sum() == int(
                fraction * cols + 1e-9
            )


def test_prune_returns_copy_and_leaves_biases_and_logits():
    model = model_with_ties()
    before = {v.path: ops.convert_to_numpy(v).copy() for v in model.weights}
    pruned = prune(model, 0.5)
    for v in model.weights:
        np.testing.assert_array_equal(ops.convert_to_numpy(v), before[v.path])
    after = {v.path: ops.convert_to_numpy(v) for v in pruned.weights}
    assert after.keys() == before.keys()
    for path in ("conv/bias", "fc/bias", "logits/kernel", "logits/bias"):
        np.testing.assert_array_equal(after[path], before[path])
    conv = after["conv/kernel"].reshape(-1, 5)
    assert ((conv == 0) & (before["conv/kernel"].reshape(-1, 5) != 0)).sum() > 0
    assert (conv == 0).sum(axis=0).min() >= 9  # int(0.5 * 18) removed


def test_apply_masks_inplace_and_validation():
    model = model_with_ties()
    masks = compute_masks(model, 0.3, "unit", exclude=["conv"])
    assert list(masks) == ["fc/kernel"]
    returned = apply_masks(model, masks, inplace=True)
    assert returned is model
    fc = ops.convert_to_numpy(model.get_layer("fc").kernel)
    assert (fc == 0).all(axis=0).sum() >= int(0.3 * 12)
    with pytest.raises(ValueError, match=r"path='nope/kernel'"):
        apply_masks(model, {"nope/kernel": np.ones((2, 2))})
    with pytest.raises(ValueError, match=r"fc/kernel.*shape"):
        apply_masks(model, {"fc/kernel": np.ones((2, 2))})
    with pytest.raises(TypeError, match=r"masks=list"):
        apply_masks(model, [np.ones(2)])


def test_wrapped_model_gives_the_same_masks():
    model = model_with_ties()
    td = apply_targeted_dropout(model, rate=0.5, target_rate=0.5)
    plain_masks = compute_masks(model, 0.7)
    td_masks = compute_masks(td, 0.7)
    assert plain_masks.keys() == td_masks.keys()
    for path in plain_masks:
        np.testing.assert_array_equal(plain_masks[path], td_masks[path])


@pytest.mark.parametrize(
    "fraction, targeting, error, match",
    [
        (1.5, "weight", ValueError, r"fraction=1.5"),
        (-0.1, "weight", ValueError, r"fraction=-0.1"),
        ("half", "weight", TypeError, r"fraction='half'"),
        (0.5, "channel", ValueError, r"targeting='channel'"),
    ],
)
def test_bad_arguments(fraction, targeting, error, match):
    with pytest.raises(error, match=match):
        compute_masks(model_with_ties(), fraction, targeting)


def test_bad_models():
    with pytest.raises(TypeError, match=r"model="):
        compute_masks(np.ones(3), 0.5)
    with pytest.raises(ValueError, match=r"unbuilt"):
        compute_masks(keras.Sequential([keras.layers.Dense(2)]), 0.5)


def distinct_model(seed=0):
    """A conv (6 input channels, not a multiple of 4) and a dense kernel
    with continuous weights: no ties."""
    inputs = keras.Input((5, 5, 6))
    x = keras.layers.Conv2D(5, 3, name="conv")(inputs)
    x = keras.layers.Flatten()(x)
    x = keras.layers.Dense(8, name="fc")(x)
    outputs = keras.layers.Dense(3, name="logits")(x)
    model = keras.Model(inputs, outputs)
    rng = np.random.default_rng(seed)
    for v in model.weights:
        v.assign(rng.normal(size=v.shape).astype("float32"))
    return model


def kernels_of(model):
    return {
        f"{name}/kernel": ops.convert_to_numpy(model.get_layer(name).kernel)
        for name in ("conv", "fc")
    }


@pytest.mark.parametrize("fraction", [0.0, 0.3, 0.5, 0.9, 1.0])
def test_global_weight_threshold(fraction):
    model = distinct_model()
    conv = model.get_layer("conv").kernel
    conv.assign(conv * 3.0)  # larger weights: pruned less than fc globally
    kernels = kernels_of(model)
    masks = compute_masks(model, fraction, scope="global")
    everything = np.concatenate([np.abs(k).ravel() for k in kernels.values()])
    k = int(fraction * everything.size + 1e-9)
    threshold = np.sort(everything)[k - 1] if k else -1.0
    total_zeros = 0
    for path, kernel in kernels.items():
        expected = (np.abs(kernel) > threshold).astype("float32")
        np.testing.assert_array_equal(masks[path], expected)
        total_zeros += int((masks[path] == 0).sum())
    assert total_zeros == k
    # One threshold: per-layer sparsities differ, unlike the default.
    if 0 < fraction < 1:
        sparsity = [float((m == 0).mean()) for m in masks.values()]
        assert sparsity[0] != sparsity[1]


def test_global_unit_pruning_ranks_all_columns():
    model = distinct_model()
    kernels = kernels_of(model)
    masks = compute_masks(model, 0.5, "unit", scope="global")
    norms = np.concatenate(
        [
            np.linalg.norm(k.reshape(-1, k.shape[-1]), axis=0)
            for k in kernels.values()
        ]
    )
    cut = np.sort(norms)[int(0.5 * norms.size) - 1]
    for path, kernel in kernels.items():
        matrix = masks[path].reshape(-1, kernel.shape[-1])
        column_norms = np.linalg.norm(
            kernel.reshape(-1, kernel.shape[-1]), axis=0
        )
        np.testing.assert_array_equal(matrix.all(axis=0), column_norms > cut)
        assert np.all(matrix.all(axis=0) | ~matrix.any(axis=0))


def tfmot_m_by_n(weights, zeros, block):
    """TF-MOT's generate_m_by_n_mask on weights_rearrange, transcribed:
    rows are (out, h, w) lanes, blocks of `block` along the input channels,
    zero-padded; the `block - zeros` largest |w| of each block kept."""
    if weights.ndim == 2:
        lanes = weights.T
    else:
        lanes = np.transpose(weights, (3, 0, 1, 2)).reshape(
            -1, weights.shape[2]
        )
    pad = block - lanes.shape[1] % block
    padded = np.pad(np.abs(lanes), ((0, 0), (0, pad)))
    blocks = padded.reshape(-1, block)
    keep = np.zeros_like(blocks)
    top = np.argsort(-blocks, axis=1, kind="stable")[:, : block - zeros]
    np.put_along_axis(keep, top, 1.0, axis=1)
    keep = keep.reshape(padded.shape)[:, : lanes.shape[1]]
    if weights.ndim == 2:
        return keep.T
    shape = (weights.shape[3],) + weights.shape[:3]
    return np.transpose(keep.reshape(shape), (1, 2, 3, 0))


@pytest.mark.parametrize("n, m", [(2, 4), (1, 4), (3, 4), (1, 2), (4, 8)])
def test_n_of_m_matches_tfmot_definition(n, m):
    model = distinct_model(seed=n * 10 + m)
    masks = nm_masks(model, n, m)
    for path, kernel in kernels_of(model).items():
        np.testing.assert_array_equal(
            masks[path], tfmot_m_by_n(kernel, m - n, m)
        )
    two_four = compute_masks(model, (m - n) / m, block_size=m)
    for path in masks:
        np.testing.assert_array_equal(two_four[path], masks[path])


def test_two_four_counts_per_block():
    model = distinct_model()
    masks = nm_masks(model)
    fc = masks["fc/kernel"]  # 3*3*5 = 45 inputs: 11 full blocks + 1 short
    blocks = fc[:44].reshape(11, 4, 8)
    np.testing.assert_array_equal(blocks.sum(axis=1), 2)
    np.testing.assert_array_equal(fc[44], 1)  # a block of 1 keeps it
    conv = masks["conv/kernel"]  # 6 input channels: 4 + 2
    np.testing.assert_array_equal(conv[:, :, :4].sum(axis=2), 2)
    np.testing.assert_array_equal(conv[:, :, 4:], 1)


@pytest.mark.parametrize("targeting", ["weight", "unit"])
def test_random_masks_exact_counts_and_seeded(targeting):
    model = distinct_model()
    fraction = 0.4
    first = compute_masks(
        model, fraction, targeting, criterion="random", seed=3
    )
    again = compute_masks(
        model, fraction, targeting, criterion="random", seed=3
    )
    other = compute_masks(
        model, fraction, targeting, criterion="random", seed=4
    )
    magnitude = compute_masks(model, fraction, targeting)
    for path, mask in first.items():
        np.testing.assert_array_equal(mask, again[path])
        assert not np.array_equal(mask, other[path])
        assert not np.array_equal(mask, magnitude[path])
        matrix = mask.reshape(-1, mask.shape[-1])
        rows, cols = matrix.shape
        if targeting == "weight":
            np.testing.assert_array_equal(
                (matrix == 0).sum(axis=0), int(fraction * rows)
            )
        else:
            assert (~matrix.any(axis=0)).sum() == int(fraction * cols)
            assert np.all(matrix.all(axis=0) | ~matrix.any(axis=0))


def test_random_masks_are_uniform():
    """Over 100 seeds each weight of a column is removed with probability
    k/rows; the pooled frequencies stay within 5 binomial sd."""
    inputs = keras.Input((10,))
    outputs = keras.layers.Dense(4, name="fc")(inputs)
    model = keras.Model(inputs, outputs)
    removed = np.zeros((10, 4))
    draws = 100
    for seed in range(draws):
        mask = compute_masks(
            model, 0.3, criterion="random", seed=seed, exclude_logits=False
        )["fc/kernel"]
        removed += mask == 0
    p = 3 / 10
    sd = np.sqrt(p * (1 - p) / draws)
    assert np.abs(removed / draws - p).max() < 5 * sd


def test_scores_rank_instead_of_magnitude():
    model = distinct_model()
    kernels = kernels_of(model)
    rng = np.random.default_rng(9)
    # Negative importances (as -log alpha can be) rank by value, not |value|.
    scores = {p: rng.normal(size=k.shape) for p, k in kernels.items()}
    masks = compute_masks(model, 0.5, scores=scores)
    for path, score in scores.items():
        matrix = score.reshape(-1, score.shape[-1])
        order = np.argsort(matrix, axis=0, kind="stable")
        expected = np.ones_like(matrix)
        np.put_along_axis(expected, order[: matrix.shape[0] // 2], 0.0, axis=0)
        np.testing.assert_array_equal(
            masks[path].reshape(matrix.shape), expected
        )
    magnitude = {p: np.abs(k) for p, k in kernels.items()}
    for kw in ({}, {"scope": "global"}):
        by_scores = compute_masks(model, 0.6, scores=magnitude, **kw)
        by_weights = compute_masks(model, 0.6, **kw)
        for path in by_weights:
            np.testing.assert_array_equal(by_scores[path], by_weights[path])


def test_unit_scores_per_column_or_kernel_shaped():
    model = distinct_model()
    gates = {
        "conv/kernel": np.array([0.9, 0.1, 0.5, 0.2, 0.8]),
        "fc/kernel": np.linspace(1.0, 0.0, 8),
    }
    masks = compute_masks(model, 0.5, "unit", scores=gates)
    np.testing.assert_array_equal(
        masks["conv/kernel"].reshape(-1, 5).all(axis=0), [1, 0, 1, 0, 1]
    )
    np.testing.assert_array_equal(
        masks["fc/kernel"].all(axis=0), [1, 1, 1, 1, 0, 0, 0, 0]
    )
    broadcast = {
        p: np.broadcast_to(g, kernels_of(model)[p].shape)
        for p, g in gates.items()
    }
    again = compute_masks(model, 0.5, "unit", scores=broadcast)
    for path in masks:
        np.testing.assert_array_equal(again[path], masks[path])


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(scope="layer"), r"scope='layer'"),
        (dict(criterion="taylor"), r"criterion='taylor'"),
        (dict(block_size=1), r"block_size=1"),
        (dict(block_size=4, targeting="unit"), r"targeting='unit'"),
        (dict(block_size=4, scope="global"), r"scope='global'"),
        (
            dict(scores={"fc/kernel": np.ones((45, 8))}),
            r"no entry.*conv/kernel",
        ),
        (
            dict(scores={"logits/kernel": np.ones((8, 3))}),
            r"path='logits/kernel'",
        ),
        (
            dict(scores={"conv/kernel": np.ones(5), "fc/kernel": np.ones(8)}),
            r"conv/kernel.*shape \(5,\)",
        ),
        (dict(scores={}, criterion="random"), r"criterion='random'"),
    ],
)
def test_bad_mask_options(kwargs, match):
    with pytest.raises(ValueError, match=match):
        compute_masks(distinct_model(), 0.5, **kwargs)


def test_bad_n_of_m():
    with pytest.raises(ValueError, match=r"n=5, m=4"):
        nm_masks(distinct_model(), 5, 4)
    with pytest.raises(ValueError, match=r"m=0"):
        nm_masks(distinct_model(), 1, 0)


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_non_finite_kernels_and_scores_are_refused(bad):
    model = distinct_model()
    kernel = ops.convert_to_numpy(model.get_layer("fc").kernel).copy()
    kernel[3, 2] = bad
    model.get_layer("fc").kernel.assign(kernel)
    with pytest.raises(ValueError, match=r"'fc/kernel' has non-finite"):
        compute_masks(model, 0.5)
    with pytest.raises(ValueError, match=r"'fc/kernel' has non-finite"):
        nm_masks(model)
    # Random pruning does not read the weights.
    assert compute_masks(model, 0.5, criterion="random", seed=0)
    clean = distinct_model()
    scores = {
        p: np.where(np.arange(k.size).reshape(k.shape) == 0, bad, 1.0)
        for p, k in kernels_of(clean).items()
    }
    with pytest.raises(ValueError, match=r"scores for 'conv/kernel'"):
        compute_masks(clean, 0.5, scores=scores)
